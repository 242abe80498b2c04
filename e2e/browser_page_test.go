package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/chromedp/chromedp"
)

// TestBrowserPage drives what the chat page offers people, on a node that
// takes tokens, at a phone's width and a desktop's: signing in with a
// token (in the URL fragment, and pasted), the rooms the API lists in a
// fresh page, creating a room and adding a member, unread badges that
// rise as another user posts, day separators and dates, "seen by N"
// never counting oneself, links, escaped text, and a layout in which
// words do not break and Send stays on screen. Screenshots of each width
// are saved (to $CHATD_ARTIFACTS, or the test's temporary directory).
func TestBrowserPage(t *testing.T) {
	needChromium(t)
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k)
	shots := os.Getenv("CHATD_ARTIFACTS")
	if shots == "" {
		shots = t.TempDir()
	}
	shots = filepath.Join(shots, "browser-page")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		width, height int64
		phone         bool
	}{{360, 740, true}, {1280, 800, false}} {
		t.Run(strconv.FormatInt(w.width, 10), func(t *testing.T) {
			browser := startBrowser(t) // clients_test.go
			sfx := strconv.FormatInt(w.width, 10)
			annID, benID := "ann-"+sfx, "ben-"+sfx
			team, side := "team-"+sfx, "side-"+sfx
			url := "http://" + n.app.Addr() + "/"
			open := func(user string) *tab {
				tb := newTab(t, browser, user, url)
				tb.do("set the viewport", chromedp.EmulateViewport(w.width, w.height))
				return tb
			}
			ann, ben := open(annID), open(benID)

			// A name is refused on a server that wants tokens, and so is a
			// token it did not sign; both say so.
			ben.do("open the page", chromedp.Navigate(url))
			ben.do("sign in by name", chromedp.SendKeys(chromedp.CSS("#name"), benID), chromedp.Click(chromedp.CSS("#login button")))
			ben.waitFor(`document.getElementById("login-error").textContent.includes("sign in with a token")`, "a name refused")
			ben.eval(`document.getElementById("name").value = ""`)
			ben.do("sign in with a bad token", chromedp.SendKeys(chromedp.CSS("#token"), k.HS(t, benID)+"x"), chromedp.Click(chromedp.CSS("#login button")))
			ben.waitFor(`document.getElementById("login-error").textContent.includes("refused this token")`, "a bad token refused")

			// Ann signs in with a token in the URL fragment, which the page
			// then takes out of the address bar.
			ann.do("open the page with a token", chromedp.Navigate(url+"#token="+k.HS(t, annID)))
			ann.waitFor(`connState() === "connected"`, "connected")
			ann.waitFor(`location.hash === "" && document.getElementById("me").textContent === `+strconv.Quote(annID),
				"signed in as "+annID+", the token gone from the URL")

			// She makes two rooms and adds ben to each, through the page.
			for _, room := range []string{side, team} {
				ann.openDetails("#new-room")
				ann.do("create "+room, chromedp.SendKeys(chromedp.CSS("#room"), room),
					chromedp.SendKeys(chromedp.CSS("#room-name"), "Room "+room), chromedp.Click(chromedp.CSS("#create button")))
				ann.waitFor(`document.querySelector("#rooms li.current")?.dataset.room === `+strconv.Quote(room), "in "+room)
				ann.waitFor(`document.getElementById("member-count").textContent === "(1)"`, "one member")
				ann.openDetails("#members")
				ann.do("add "+benID, chromedp.SendKeys(chromedp.CSS("#member"), benID), chromedp.Click(chromedp.CSS("#add-member button")))
				ann.waitFor(`document.getElementById("member-count").textContent === "(2)" && `+
					`document.getElementById("member-list").textContent.includes(`+strconv.Quote(benID)+`)`, benID+" listed as a member")
			}
			var got struct {
				Name    string `json:"name"`
				Members []struct {
					UserID string `json:"userId"`
				} `json:"members"`
			}
			if code := api(t, n, "GET", "/api/rooms/"+team, k.HS(t, annID), "", &got); code != 200 ||
				got.Name != "Room "+team || len(got.Members) != 2 || got.Members[1].UserID != benID {
				t.Fatalf("the room the page made: %d %+v", code, got)
			}

			// Ben pastes his token into a fresh page: the rooms come from
			// the API, though this tab never saw them.
			ben.eval(`document.getElementById("token").value = ""`)
			ben.do("sign in with a pasted token", chromedp.SendKeys(chromedp.CSS("#token"), k.HS(t, benID)), chromedp.Click(chromedp.CSS("#login button")))
			ben.waitFor(`connState() === "connected"`, "connected")
			ben.waitFor(`[...document.querySelectorAll("#rooms li")].map(li => li.dataset.room).sort().join(",") === `+
				strconv.Quote(side+","+team), "both rooms listed")
			ben.click(`#rooms li[data-room="` + side + `"] button`)
			ben.waitFor(`document.querySelector("#rooms li.current")?.dataset.room === `+strconv.Quote(side), "in "+side)

			// Ann posts in team while ben looks at side: his badge rises.
			// One message carries a link, one markup that must stay text,
			// one a token too long for a line.
			link := "https://example.com/a?b=1"
			markup := `<script>pwned=1</script> <img src=x onerror=pwned=2> <b>bold</b> javascript:alert(1)`
			long := strings.Repeat("x", 150)
			ann.click(`#rooms li[data-room="` + team + `"] button`)
			ann.say("hello ben, see " + link + ".")
			ben.waitFor(`badge(`+strconv.Quote(team)+`) === "1"`, "a badge of 1")
			ann.say(markup)
			ben.waitFor(`badge(`+strconv.Quote(team)+`) === "2"`, "a badge of 2")
			ann.say("words wrap between words and never inside one, even on a narrow phone screen " + long)
			ben.waitFor(`badge(`+strconv.Quote(team)+`) === "3"`, "a badge of 3")
			ann.waitFor(`texts().length === 3`, "her messages")
			if s := ann.eval(`seen().join("|")`); s != "||" {
				t.Fatalf("ann's messages read %q before anyone else has read them", s)
			}

			// Ben opens team: the badge goes, the link is an anchor, the
			// markup is text, and no message reads "seen by" him.
			ben.click(`#rooms li[data-room="` + team + `"] button`)
			ben.waitFor(`badge(`+strconv.Quote(team)+`) === "" && texts().length === 3`, "team read")
			ben.waitFor(`[...document.querySelectorAll("#messages .text a")].map(a => a.href + " " + a.textContent + " " + a.rel).join("|") === `+
				strconv.Quote(link+" "+link+" noopener noreferrer"), "the link as an anchor, its full stop left out")
			if s := ben.eval(`texts()[1] + "|" + document.querySelectorAll("#messages script, #messages img, #messages b").length + "|" + window.pwned`); s != markup+"|0|undefined" {
				t.Fatalf("the markup rendered as %q", s)
			}
			ben.say("hi ann")
			// Each has read the other's messages: each sees "seen by 1" on
			// their own and nothing on the other's.
			ann.waitFor(`seen().join("|") === "seen by 1|seen by 1|seen by 1|"`, "ben's receipt on her messages")
			ben.waitFor(`seen().join("|") === "|||seen by 1"`, "ann's receipt on his message, none by himself")

			// One day separator, before the first message, naming the day
			// it was sent (in the page's time zone); each time has its date.
			for _, tb := range []*tab{ann, ben} {
				tb.waitFor(`(() => {
					const items = [...document.querySelectorAll("#messages li")];
					const days = items.filter(li => li.classList.contains("day"));
					const first = new Date(items[1].querySelector("time").dateTime);
					const key = first.getFullYear() + "-" + String(first.getMonth() + 1).padStart(2, "0") + "-" + String(first.getDate()).padStart(2, "0");
					const label = first.toLocaleDateString([], {weekday: "long", year: "numeric", month: "long", day: "numeric"});
					const times = [...document.querySelectorAll("#messages time")];
					return days.length === 1 && items[0] === days[0] && days[0].dataset.day === key &&
						days[0].textContent.includes(label) && days[0].textContent.includes(String(first.getFullYear())) &&
						times.length === 4 && times.every(t => t.title.includes(String(first.getFullYear())) && /\d:\d\d/.test(t.textContent));
				})()`, "a day separator and dated times")
			}

			// Layout, checked in both pages: nothing wider than the screen,
			// Send inside it, no word split across lines, the long token
			// wrapped, and the rooms beside the messages on a desktop and
			// above them on a phone.
			for _, tb := range []*tab{ann, ben} {
				tb.waitFor(`document.documentElement.scrollWidth <= innerWidth`, "no horizontal overflow")
				r := tb.eval(`JSON.stringify(document.querySelector("#send button").getBoundingClientRect())`)
				var b struct{ Left, Right, Top, Bottom, Width float64 }
				if err := json.Unmarshal([]byte(r), &b); err != nil {
					t.Fatal(err)
				}
				if b.Width == 0 || b.Left < 0 || b.Right > float64(w.width) || b.Top < 0 || b.Bottom > float64(w.height) {
					t.Fatalf("%s: the Send button is at %+v, outside the %dx%d viewport", tb.user, b, w.width, w.height)
				}
				split := tb.eval(`(() => {
					const split = [];
					for (const el of document.querySelectorAll("#messages .text")) {
						const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
						for (let n = walk.nextNode(); n; n = walk.nextNode()) {
							if (n.parentElement.closest(".long")) continue; // links and long tokens may break
							for (const m of n.data.matchAll(/\S+/g)) {
								const r = document.createRange();
								r.setStart(n, m.index);
								r.setEnd(n, m.index + m[0].length);
								if (r.getClientRects().length > 1) split.push(m[0]);
							}
						}
					}
					return split.join(" ");
				})()`)
				if split != "" {
					t.Fatalf("%s: words broken across lines: %s", tb.user, split)
				}
				if got := tb.eval(`(() => { const l = [...document.querySelectorAll("#messages .text .long")].find(l => l.textContent === "` + long + `"); return l && l.getClientRects().length > 1; })()`); got != "true" {
					t.Fatalf("%s: the long token did not wrap in a span of its own: %s", tb.user, got)
				}
				placed := tb.eval(`(() => {
					const nav = document.querySelector("nav").getBoundingClientRect();
					const view = document.getElementById("room-view").getBoundingClientRect();
					return nav.right <= view.left + 1 ? "beside" : nav.bottom <= view.top + 1 ? "above" : "overlapping";
				})()`)
				if want := map[bool]string{true: "above", false: "beside"}[w.phone]; placed != want {
					t.Fatalf("%s: the rooms are %s the messages, want %s", tb.user, placed, want)
				}
			}

			// The favicon is an SVG the binary serves.
			ann.waitFor(`(() => { const l = document.querySelector('link[rel~="icon"]'); return !!l && l.href.endsWith(".svg"); })()`, "a favicon link")
			if got := ann.eval(`(() => {
				const x = new XMLHttpRequest();
				x.open("GET", document.querySelector('link[rel~="icon"]').href, false);
				x.send();
				return x.status + " " + x.getResponseHeader("content-type");
			})()`); got != "200 image/svg+xml" {
				t.Fatalf("favicon: %s", got)
			}

			for _, tb := range []*tab{ann, ben} {
				png, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
				if err != nil {
					t.Fatalf("%s: screenshot: %v", tb.user, err)
				}
				p := filepath.Join(shots, fmt.Sprintf("page-%dpx-%s.png", w.width, tb.user))
				if err := os.WriteFile(p, png, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("screenshot: %s", p)
			}
		})
	}
}
