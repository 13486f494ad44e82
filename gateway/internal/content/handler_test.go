package content

import "testing"

func TestParseRange(t *testing.T) {
	cases := []struct {
		header  string
		want    Range
		ok, bad bool
	}{
		{"", Range{}, false, false},
		{"bytes=0-", Range{Start: 0, End: -1}, true, false},
		{"bytes=10-19", Range{Start: 10, End: 19}, true, false},
		{"bytes=-500", Range{Suffix: 500}, true, false},
		{"bytes=-0", Range{}, false, true},
		{"bytes=5-1", Range{}, false, false},     // invalid: ignored, whole file
		{"bytes=0-1,5-6", Range{}, false, false}, // multi-range: whole file
		{"items=0-1", Range{}, false, false},     // other unit: ignored
		{"bytes=abc-", Range{}, false, false},
	}
	for _, c := range cases {
		got, ok, err := ParseRange(c.header)
		if ok != c.ok || (err != nil) != c.bad || (ok && got != c.want) {
			t.Errorf("ParseRange(%q) = %+v, %v, %v; want %+v, %v, bad=%v", c.header, got, ok, err, c.want, c.ok, c.bad)
		}
	}
}
