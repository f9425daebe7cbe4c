package clinical

import (
	"strings"
	"testing"
)

// TestKnownConversions pins MME/day values worked by hand from the CDC
// 2022 table, including the CDC's own examples (hydrocodone/APAP 5/325
// four times a day is 20; oxycodone ER 10 mg twice a day is 30).
func TestKnownConversions(t *testing.T) {
	tests := []struct {
		med       string
		qty, days float64
		unit      string
		want      float64
	}{
		{"Oxycodone Hydrochloride 10 MG Oral Tablet", 120, 30, "each", 60},
		{"Hydrocodone Bitartrate 5 MG / Acetaminophen 325 MG Oral Tablet", 120, 30, "each", 20},
		{"Acetaminophen 325 MG / Hydrocodone Bitartrate 5 MG Oral Tablet", 120, 30, "each", 20},
		{"72 HR fentanyl 0.025 MG/HR Transdermal System", 10, 30, "each", 60},
		{"fentanyl 25 MCG/HR Transdermal Patch", 10, 30, "patch", 60},
		// Two 25 mcg/hr systems worn at once.
		{"72 HR fentanyl 0.025 MG/HR Transdermal System", 20, 30, "each", 120},
		{"12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet", 60, 30, "each", 30},
		{"acetaminophen 300 MG / codeine phosphate 30 MG Oral Tablet", 120, 30, "EA", 18},
		{"Methadone Hydrochloride 10 MG Oral Tablet", 90, 30, "each", 141},
		{"Morphine Sulfate 15 MG Oral Tablet", 120, 30, "each", 60},
		{"Hydromorphone Hydrochloride 2 MG Oral Tablet", 180, 30, "each", 60},
		{"Oxymorphone Hydrochloride 5 MG Oral Tablet", 120, 30, "each", 60},
		{"tapentadol 50 MG Oral Tablet", 120, 30, "each", 80},
		{"tramadol hydrochloride 50 MG Oral Tablet", 120, 30, "each", 40},
		{"oxycodone hydrochloride 5 MG/ML Oral Solution", 60, 10, "mL", 45},
		{"Hydrocodone Bitartrate 7.5 MG / Acetaminophen 325 MG per 15 ML Oral Solution", 450, 15, "ML", 15},
		{"Oxycodone HCl 10mg tab", 120, 30, "tablet", 60},
	}
	for _, tt := range tests {
		t.Run(tt.med, func(t *testing.T) {
			h := history(t, dispense("d1", tt.med, tt.qty, tt.days, "2024-01-01", unit(tt.unit)))
			s := Summarize(h, at("2024-01-02"), Options{})
			if len(s.ActiveOpioids) != 1 {
				t.Fatalf("%d active opioids", len(s.ActiveOpioids))
			}
			o := s.ActiveOpioids[0]
			if o.Source != MMEComputed || o.MME != tt.want || s.DailyMME != tt.want || s.DailyMMEAtLeast {
				t.Errorf("MME %v (%s, %q), total %v at least %v; want %v computed", o.MME, o.Source, o.Note, s.DailyMME, s.DailyMMEAtLeast, tt.want)
			}
		})
	}
}

// TestMMEUnknown: what the summary cannot read it lists as unknown, and
// the total becomes a lower bound.
func TestMMEUnknown(t *testing.T) {
	tests := []struct {
		med  string
		opts []func(resource)
		note string // part of the reason given
	}{
		{"morphine sulfate 4 MG/ML Injectable Solution", []func(resource){unit("mL")}, "not an oral form"},
		{"Meperidine Hydrochloride 50 MG Oral Tablet", nil, "no CDC conversion factor for meperidine"},
		{"fentanyl citrate 0.1 MG Buccal Tablet", nil, "transdermal systems only"},
		{"hydrocodone/apap 5/325 mg tab", []func(resource){text("hydrocodone/apap 5/325 mg tab")}, "strength of hydrocodone"},
		{"Oxycodone Hydrochloride 10 MG Oral Tablet", []func(resource){unit("g")}, `quantity unit "g"`},
		{"oxycodone hydrochloride 5 MG/ML Oral Solution", nil, `quantity unit "each" does not match`},
		{"oxycodone 10 MG", nil, "route is not in the medication name"},
		// The IG lets a fentanyl patch's MME be sent in mcg/hr, so the
		// responder's value is not used for one.
		{"fentanyl 25 MCG/HR Transdermal Patch", []func(resource){unit("cm2"), mme(25)}, "not used for fentanyl patches"},
	}
	for _, tt := range tests {
		t.Run(tt.med, func(t *testing.T) {
			h := history(t, dispense("d1", tt.med, 60, 30, "2024-01-01", tt.opts...))
			s := Summarize(h, at("2024-01-02"), Options{})
			if len(s.ActiveOpioids) != 1 {
				t.Fatalf("%d active opioids", len(s.ActiveOpioids))
			}
			o := s.ActiveOpioids[0]
			if o.Source != MMEUnknown || !strings.Contains(o.Note, tt.note) || !s.DailyMMEAtLeast || s.DailyMME != 0 {
				t.Errorf("%s %q, total %v at least %v; want unknown, %q", o.Source, o.Note, s.DailyMME, s.DailyMMEAtLeast, tt.note)
			}
		})
	}
}

func TestMMESources(t *testing.T) {
	// The responder's value wins over the computed one (here 60).
	s := Summarize(history(t, dispense("d1", "Oxycodone Hydrochloride 10 MG Oral Tablet", 120, 30, "2024-01-01", mme(45))), at("2024-01-02"), Options{})
	if o := s.ActiveOpioids[0]; o.Source != MMEReported || o.MME != 45 {
		t.Errorf("%v %s, want 45 reported", o.MME, o.Source)
	}
	// A brand name the summary cannot read is still an opioid when the
	// responder sends its MME.
	s = Summarize(history(t, dispense("d1", "", 120, 30, "2024-01-01", text("Percocet 10/325"), mme(60))), at("2024-01-02"), Options{})
	if len(s.ActiveOpioids) != 1 || s.DailyMME != 60 || s.DailyMMEAtLeast {
		t.Errorf("%+v total %v", s.ActiveOpioids, s.DailyMME)
	}
	// Buprenorphine is listed, not counted, and does not make the total
	// a lower bound, even with an MME from the responder.
	s = Summarize(history(t,
		dispense("d1", "buprenorphine 8 MG / naloxone 2 MG Sublingual Film", 30, 30, "2024-01-01", mme(30)),
		dispense("d2", "Oxycodone Hydrochloride 5 MG Oral Tablet", 60, 30, "2024-01-01"),
	), at("2024-01-02"), Options{})
	if len(s.ActiveOpioids) != 2 || s.ActiveOpioids[0].Source != MMENotCounted || s.DailyMME != 15 || s.DailyMMEAtLeast {
		t.Errorf("%+v total %v at least %v", s.ActiveOpioids, s.DailyMME, s.DailyMMEAtLeast)
	}
	// Not an opioid: not listed.
	s = Summarize(history(t, dispense("d1", "24 HR alprazolam 1 MG Extended Release Oral Tablet", 30, 30, "2024-01-01")), at("2024-01-02"), Options{})
	if len(s.ActiveOpioids) != 0 || s.DailyMME != 0 {
		t.Errorf("%+v", s.ActiveOpioids)
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		name  string
		key   string
		route route
	}{
		{"Hydrocodone Bitartrate 5 MG / Acetaminophen 325 MG Oral Tablet", "acetaminophen 325/0 + hydrocodone 5/0", routeOral},
		{"72 HR fentanyl 0.025 MG/HR Transdermal System", "fentanyl 0.025/2", routeTransdermal},
		{"24 HR alprazolam 1 MG Extended Release Oral Tablet", "alprazolam 1/0", routeOral},
		{"buprenorphine 8 MG / naloxone 2 MG Sublingual Film", "buprenorphine 8/0 + naloxone 2/0", routeOther},
		{"Hydrocodone Bitartrate 7.5 MG / Acetaminophen 325 MG per 15 ML Oral Solution", "acetaminophen 21.666666666666668/1 + hydrocodone 0.5/1", routeOral},
		{"oxycodone hydrochloride 2.5 mg/5 ml oral solution", "oxycodone 0.5/1", routeOral},
		{"hydrocodone/apap 5/325 mg tab", "", routeOral},
		{"Percocet", "", routeUnknown},
	}
	for _, tt := range tests {
		p := parseName(tt.name)
		if p.key() != tt.key || p.route != tt.route {
			t.Errorf("%s: key %q route %d, want %q %d", tt.name, p.key(), p.route, tt.key, tt.route)
		}
	}
}
