package clinical

import (
	"slices"
	"strings"
	"testing"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
)

const oxy10 = "Oxycodone Hydrochloride 10 MG Oral Tablet" // 120 over 30 days: 60 MME/day

func TestDailyMMEThresholds(t *testing.T) {
	injectable := dispense("u", "morphine sulfate 4 MG/ML Injectable Solution", 10, 30, "2024-01-01", unit("mL"))
	ended := dispense("old", oxy10, 120, 30, "2023-11-01") // supply ran out on 2023-12-01
	tests := []struct {
		name     string
		dispense []resource
		total    float64
		atLeast  bool
		severity Severity // "" for no flag
		on       []string
	}{
		{"49.9 reported", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(49.9))}, 49.9, false, "", nil},
		{"50 reported", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(50))}, 50, false, SeverityModerate, []string{"a"}},
		{"89.9 reported", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(89.9))}, 89.9, false, SeverityModerate, []string{"a"}},
		{"90 reported", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(90))}, 90, false, SeverityHigh, []string{"a"}},
		{"20 + 29.9", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(20)), dispense("b", oxy10, 1, 30, "2024-01-01", mme(29.9))}, 49.9, false, "", nil},
		{"20 + 30", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(20)), dispense("b", oxy10, 1, 30, "2024-01-01", mme(30))}, 50, false, SeverityModerate, []string{"a", "b"}},
		{"60 computed + 29.9 reported", []resource{dispense("a", oxy10, 120, 30, "2024-01-01"), dispense("b", oxy10, 1, 30, "2024-01-02", mme(29.9))}, 89.9, false, SeverityModerate, []string{"a", "b"}},
		{"60 computed + 30 reported", []resource{dispense("a", oxy10, 120, 30, "2024-01-01"), dispense("b", oxy10, 1, 30, "2024-01-02", mme(30))}, 90, false, SeverityHigh, []string{"a", "b"}},
		// Codeine: 0.15 × 120 is not exactly 18 in floating point.
		{"codeine 18 + 32", []resource{
			dispense("a", "acetaminophen 300 MG / codeine phosphate 30 MG Oral Tablet", 120, 30, "2024-01-01"),
			dispense("b", oxy10, 1, 30, "2024-01-01", mme(32))}, 50, false, SeverityModerate, []string{"a", "b"}},
		// The unknown dispense is listed but not in the flag's records.
		{"50 + unknown", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(50)), injectable}, 50, true, SeverityModerate, []string{"a"}},
		{"49.9 + unknown", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(49.9)), injectable}, 49.9, true, "", nil},
		{"ended supply not counted", []resource{dispense("a", oxy10, 1, 30, "2024-01-01", mme(40)), ended}, 40, false, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Summarize(history(t, tt.dispense...), at("2024-01-10T12:00:00Z"), Options{})
			if s.DailyMME != tt.total || s.DailyMMEAtLeast != tt.atLeast {
				t.Errorf("total %v at least %v, want %v %v", s.DailyMME, s.DailyMMEAtLeast, tt.total, tt.atLeast)
			}
			flags := flagsOf(s, FlagDailyMME)
			if tt.severity == "" {
				if len(flags) != 0 {
					t.Errorf("flagged: %+v", flags)
				}
				return
			}
			if len(flags) != 1 || flags[0].Severity != tt.severity || !slices.Equal(keys(flags[0].On), tt.on) {
				t.Fatalf("flags %+v, want one %s on %v", flags, tt.severity, tt.on)
			}
			if want := "at least "; strings.Contains(flags[0].Detail, want) != tt.atLeast {
				t.Errorf("detail %q", flags[0].Detail)
			}
		})
	}
}

func TestMMEThresholdOptions(t *testing.T) {
	h := history(t, dispense("a", oxy10, 120, 30, "2024-01-01")) // 60
	s := Summarize(h, at("2024-01-10"), Options{MMEModerate: 20, MMEHigh: 60})
	if f := flagsOf(s, FlagDailyMME); len(f) != 1 || f[0].Severity != SeverityHigh || !strings.Contains(f[0].Detail, "at or above 60 MME/day") {
		t.Errorf("%+v", f)
	}
}

// TestActiveWindow: a supply is active while start + days supply is later
// than now; whenPrepared stands in for a missing whenHandedOver.
func TestActiveWindow(t *testing.T) {
	tests := []struct {
		name   string
		opts   []func(resource)
		now    string
		active bool
	}{
		{"last minute of the last day", nil, "2024-01-30T23:59:00Z", true},
		{"midnight after the last day", nil, "2024-01-31T00:00:00Z", false},
		{"whenPrepared", []func(resource){prepared("2024-01-01")}, "2024-01-30T12:00:00Z", true},
		{"whenPrepared, ended", []func(resource){prepared("2024-01-01")}, "2024-01-31T12:00:00Z", false},
		{"now in another zone", nil, "2024-01-30T23:59:00-05:00", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Summarize(history(t, dispense("a", oxy10, 120, 30, "2024-01-01", tt.opts...)), at(tt.now), Options{})
			if got := len(s.ActiveOpioids) == 1; got != tt.active {
				t.Errorf("active %v, want %v", got, tt.active)
			}
		})
	}
	// whenHandedOver wins over whenPrepared.
	d := dispense("a", oxy10, 120, 30, "2024-01-05")
	d["whenPrepared"] = "2024-01-01"
	s := Summarize(history(t, d), at("2024-02-02"), Options{})
	if len(s.ActiveOpioids) != 1 || !s.ActiveOpioids[0].Start.Equal(at("2024-01-05")) || !s.ActiveOpioids[0].End.Equal(at("2024-02-04")) {
		t.Errorf("%+v", s.ActiveOpioids)
	}
}

func TestOpioidBenzodiazepineOverlap(t *testing.T) {
	opioid := dispense("o", oxy10, 120, 30, "2024-01-01") // supplied 2024-01-01 to 2024-01-30
	alprazolam := "alprazolam 0.5 MG Oral Tablet"
	tests := []struct {
		name     string
		benzo    resource
		now      string
		severity Severity // "" for no flag
		detail   string
		on       []string // in date order
	}{
		{"overlap by one day", dispense("b", alprazolam, 30, 30, "2024-01-30"), "2024-03-01", SeverityModerate,
			"Opioid (oxycodone) and benzodiazepine (alprazolam) supplies overlap on 1 day, 2024-01-30.", []string{"o", "b"}},
		{"adjacent windows", dispense("b", alprazolam, 30, 30, "2024-01-31"), "2024-03-01", "", "", nil},
		{"benzodiazepine first", dispense("b", "clonazepam 1 MG Oral Tablet", 30, 10, "2023-12-25"), "2024-03-01", SeverityModerate,
			"Opioid (oxycodone) and benzodiazepine (clonazepam) supplies overlap on 3 days, 2024-01-01 to 2024-01-03.", []string{"b", "o"}},
		{"overlapping today", dispense("b", alprazolam, 30, 30, "2024-01-20"), "2024-01-25T09:00:00Z", SeverityHigh,
			"Opioid (oxycodone) and benzodiazepine (alprazolam) supplies overlap on 11 days, 2024-01-20 to 2024-01-30, including today.", []string{"o", "b"}},
		{"LME noted", dispense("b", alprazolam, 30, 30, "2024-01-25", lme(4)), "2024-03-01", SeverityModerate,
			"overlap on 6 days, 2024-01-25 to 2024-01-30. The PDMP reports 4 LME for the alprazolam 0.5 MG Oral Tablet dispensed 2024-01-25.", []string{"o", "b"}},
		{"not a benzodiazepine", dispense("b", "zolpidem tartrate 10 MG Oral Tablet", 30, 30, "2024-01-20"), "2024-03-01", "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Summarize(history(t, opioid, tt.benzo), at(tt.now), Options{})
			flags := flagsOf(s, FlagOpioidBenzo)
			if tt.severity == "" {
				if len(flags) != 0 {
					t.Errorf("flagged: %+v", flags)
				}
				return
			}
			if len(flags) != 1 {
				t.Fatalf("%d flags", len(flags))
			}
			f := flags[0]
			if f.Severity != tt.severity || !strings.Contains(f.Detail, tt.detail) || !slices.Equal(keys(f.On), tt.on) {
				t.Errorf("%s %q on %v; want %s %q", f.Severity, f.Detail, keys(f.On), tt.severity, tt.detail)
			}
		})
	}
}

// TestOpioidBenzodiazepineMany: one flag for all overlaps, naming every
// dispense in one and no other.
func TestOpioidBenzodiazepineMany(t *testing.T) {
	h := history(t,
		dispense("o1", oxy10, 120, 30, "2024-01-01"),
		dispense("o2", "tramadol hydrochloride 50 MG Oral Tablet", 120, 30, "2024-03-01"),
		dispense("b1", "lorazepam 1 MG Oral Tablet", 30, 30, "2024-01-15"),
		dispense("b2", "diazepam 5 MG Oral Tablet", 30, 30, "2024-03-20"),
		dispense("b3", "temazepam 15 MG Oral Capsule", 30, 30, "2024-03-31"), // starts the day o2 ends
	)
	s := Summarize(h, at("2024-07-01"), Options{})
	f := flagsOf(s, FlagOpioidBenzo)
	if len(f) != 1 {
		t.Fatalf("%d flags", len(f))
	}
	if got := keys(f[0].On); !slices.Equal(got, []string{"o1", "b1", "o2", "b2"}) {
		t.Errorf("on %v", got)
	}
	want := "Opioid (oxycodone, tramadol) and benzodiazepine (diazepam, lorazepam) supplies overlap on 27 days, 2024-01-15 to 2024-03-30."
	if f[0].Detail != want {
		t.Errorf("detail %q\nwant   %q", f[0].Detail, want)
	}
}

func TestProviders(t *testing.T) {
	// Five prescribers (pr1..pr5, as MedicationRequest requesters) and
	// five pharmacies (ph1..ph5), one pair per dispense.
	var base []resource
	for _, n := range "12345" {
		id := string(n)
		base = append(base, practitioner("pr"+id, "100000000"+id), request("rx"+id, "pr"+id), pharmacy("ph"+id, "200000000"+id, "30000"+id))
	}
	fill := func(n int, date string, opts ...func(resource)) resource {
		id := string(rune('0' + n))
		return dispense("d"+id, "gabapentin 300 MG Oral Capsule", 90, 30, date, append([]func(resource){prescribedBy("rx" + id), atPharmacy("ph" + id)}, opts...)...)
	}
	now := at("2024-07-15T10:00:00Z") // six months back: 2024-01-15
	tests := []struct {
		name              string
		fills             []resource
		p6, ph6, p12, h12 int
		flag              bool
	}{
		{"five and five", []resource{fill(1, "2024-01-15"), fill(2, "2024-03-01"), fill(3, "2024-04-01"), fill(4, "2024-05-01"), fill(5, "2024-07-15")}, 5, 5, 5, 5, true},
		{"one a day too early", []resource{fill(1, "2024-01-14"), fill(2, "2024-03-01"), fill(3, "2024-04-01"), fill(4, "2024-05-01"), fill(5, "2024-07-15")}, 4, 4, 5, 5, false},
		{"twelve-month edge", []resource{fill(1, "2023-07-15"), fill(2, "2023-07-14")}, 0, 0, 1, 1, false},
		// The same pharmacy named by its entry and by its NCPDP number, and
		// the same prescriber through two Practitioner entries sharing an
		// NPI, are counted once.
		{"same pharmacy and prescriber twice", []resource{
			fill(1, "2024-03-01"), fill(2, "2024-03-02"), fill(3, "2024-04-01"), fill(4, "2024-05-01"),
			dispense("d5", "gabapentin 300 MG Oral Capsule", 90, 30, "2024-06-01", atNCPDP("300001"), prescribedBy("rx6")),
			practitioner("pr6", "1000000001"), request("rx6", "pr6"),
		}, 4, 4, 4, 4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Summarize(history(t, append(slices.Clone(base), tt.fills...)...), now, Options{})
			c6, c12 := s.Last6Months, s.Last12Months
			if c6.Prescribers != tt.p6 || c6.Pharmacies != tt.ph6 || c12.Prescribers != tt.p12 || c12.Pharmacies != tt.h12 {
				t.Errorf("6 months %d/%d, 12 months %d/%d; want %d/%d, %d/%d", c6.Prescribers, c6.Pharmacies, c12.Prescribers, c12.Pharmacies, tt.p6, tt.ph6, tt.p12, tt.h12)
			}
			if !c6.Since.Equal(at("2024-01-15")) || !c12.Since.Equal(at("2023-07-15")) {
				t.Errorf("since %v and %v", c6.Since, c12.Since)
			}
			flags := flagsOf(s, FlagMultipleProviders)
			if (len(flags) == 1) != tt.flag {
				t.Fatalf("flags %+v", flags)
			}
			if tt.flag && !slices.Equal(keys(flags[0].On), keys(c6.Dispenses)) {
				t.Errorf("on %v, want %v", keys(flags[0].On), keys(c6.Dispenses))
			}
		})
	}
}

func TestProvidersUnknownAndOptions(t *testing.T) {
	rx1 := request("rx1", "pr1")
	rx1["identifier"] = []any{map[string]any{"system": "urn:example:order", "value": "605153"}}
	h := history(t,
		practitioner("pr1", "1000000001"), rx1, pharmacy("ph1", "2000000001", "300001"),
		dispense("d1", oxy10, 120, 30, "2024-06-01", prescribedBy("rx1"), atPharmacy("ph1")),
		// The same prescription named by its order number only.
		dispense("d4", oxy10, 120, 30, "2024-06-02", func(r resource) {
			r["authorizingPrescription"] = []any{map[string]any{"identifier": map[string]any{"system": "urn:example:order", "value": "605153"}}}
		}),
		dispense("d2", oxy10, 120, 30, "2024-06-20"), // neither known
		// A requester outside the Bundle still names one prescriber.
		dispense("d3", oxy10, 120, 30, "2024-06-25", prescribedBy("rx9")), request("rx9", "elsewhere"),
	)
	s := Summarize(h, at("2024-07-01"), Options{MinPrescribers: 2, MinPharmacies: 1})
	c := s.Last6Months
	if c.Prescribers != 2 || c.UnknownPrescriber != 1 || c.Pharmacies != 1 || c.UnknownPharmacy != 3 {
		t.Errorf("%+v", c)
	}
	if len(flagsOf(s, FlagMultipleProviders)) != 1 {
		t.Errorf("no multiple-provider flag with thresholds 2 and 1")
	}
}

func TestRefReference(t *testing.T) {
	if got := (Ref{Entry: pdmp.Entry{Key: "d1"}, Type: "MedicationDispense"}).Reference(); got != "MedicationDispense/d1" {
		t.Errorf("%s", got)
	}
	if got := (Ref{Entry: pdmp.Entry{Key: "d1", FullURL: "urn:uuid:x"}, Type: "MedicationDispense"}).Reference(); got != "urn:uuid:x" {
		t.Errorf("%s", got)
	}
}

func TestMonthsBefore(t *testing.T) {
	tests := []struct{ from, want string }{
		{"2024-07-15", "2024-01-15"},
		{"2024-08-31", "2024-02-29"},
		{"2023-08-31", "2023-02-28"},
		{"2024-03-31", "2023-09-30"},
		{"2024-01-01", "2023-07-01"},
	}
	for _, tt := range tests {
		if got := monthsBefore(dayOf(at(tt.from)), 6).String(); got != tt.want {
			t.Errorf("6 months before %s: %s, want %s", tt.from, got, tt.want)
		}
	}
}

func TestEarlyRefill(t *testing.T) {
	hydrocodone := "Hydrocodone Bitartrate 5 MG / Acetaminophen 325 MG Oral Tablet"
	tests := []struct {
		name     string
		second   resource
		severity Severity // "" for no flag
		detail   string
	}{
		{"one day left", dispense("b", hydrocodone, 120, 30, "2024-01-30"), SeverityLow,
			"dispensed 2024-01-30 with 1 of 30 days (3%) of the supply dispensed 2024-01-01 left."},
		{"adjacent", dispense("b", hydrocodone, 120, 30, "2024-01-31"), "", ""},
		{"11 days left", dispense("b", hydrocodone, 120, 30, "2024-01-20"), SeverityModerate, "with 11 of 30 days (37%)"},
		{"same day, elsewhere", dispense("b", hydrocodone, 120, 30, "2024-01-01"), SeverityModerate, "with 30 of 30 days (100%)"},
		// Same ingredients and strengths, named only in text.
		{"same drug by name", dispense("b", "", 120, 30, "2024-01-20", text("Hydrocodone Bitartrate 5 MG / Acetaminophen 325 MG Oral Tablet")), SeverityModerate, "with 11 of 30 days"},
		{"other strength", dispense("b", "Hydrocodone Bitartrate 10 MG / Acetaminophen 325 MG Oral Tablet", 120, 30, "2024-01-20"), "", ""},
		{"same RxNorm code", dispense("b", "", 120, 30, "2024-01-20", text("Norco"), func(r resource) {
			r["medicationCodeableConcept"] = map[string]any{"coding": []any{map[string]any{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "856999"}}}
		}), SeverityModerate, "with 11 of 30 days"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := dispense("a", hydrocodone, 120, 30, "2024-01-01", rxnorm("856999"))
			s := Summarize(history(t, first, tt.second), at("2024-06-01"), Options{})
			flags := flagsOf(s, FlagEarlyRefill)
			if tt.severity == "" {
				if len(flags) != 0 {
					t.Errorf("flagged: %+v", flags)
				}
				return
			}
			if len(flags) != 1 {
				t.Fatalf("%d flags", len(flags))
			}
			f := flags[0]
			if f.Severity != tt.severity || !strings.Contains(f.Detail, tt.detail) || !slices.Equal(keys(f.On), []string{"a", "b"}) {
				t.Errorf("%s %q on %v; want %s %q", f.Severity, f.Detail, keys(f.On), tt.severity, tt.detail)
			}
		})
	}
}

// TestEarlyRefillShare: the boundary between low and moderate is "more
// than EarlyRefillShare of the earlier supply left".
func TestEarlyRefillShare(t *testing.T) {
	for _, tt := range []struct {
		second string
		want   Severity
	}{{"2024-01-16", SeverityLow}, {"2024-01-15", SeverityModerate}} { // 5 and 6 of 20 days left
		h := history(t, dispense("a", oxy10, 80, 20, "2024-01-01"), dispense("b", oxy10, 80, 20, tt.second))
		f := flagsOf(Summarize(h, at("2024-06-01"), Options{}), FlagEarlyRefill)
		if len(f) != 1 || f[0].Severity != tt.want {
			t.Errorf("refill %s: %+v, want %s", tt.second, f, tt.want)
		}
	}
}

// TestEarlyRefillChain: each refill is compared with the supply that
// ends last before it, and flags come in date order.
func TestEarlyRefillChain(t *testing.T) {
	h := history(t,
		dispense("c", oxy10, 120, 30, "2024-03-25"),
		dispense("a", oxy10, 360, 90, "2024-01-01"), // supplied until 2024-03-30
		dispense("b", oxy10, 120, 30, "2024-02-01"),
		dispense("d", oxy10, 120, 30, "2024-04-24"), // c's supply ends 2024-04-24: adjacent
	)
	f := flagsOf(Summarize(h, at("2024-06-01"), Options{}), FlagEarlyRefill)
	var pairs [][]string
	for _, x := range f {
		pairs = append(pairs, keys(x.On))
	}
	if want := [][]string{{"a", "b"}, {"a", "c"}}; !slices.EqualFunc(pairs, want, slices.Equal) {
		t.Errorf("pairs %v, want %v", pairs, want)
	}
}

func TestSkippedDispenses(t *testing.T) {
	h := history(t,
		dispense("err", oxy10, 120, 30, "2024-01-01", status("entered-in-error"), mme(500)),
		dispense("partial", oxy10, 120, 30, "2024-01", mme(10)),
		dispense("nodays", oxy10, 120, 30, "2024-01-02", noDaysSupply),
		dispense("ok", oxy10, 120, 30, "2024-01-03"),
	)
	s := Summarize(h, at("2024-01-10"), Options{})
	if len(s.ActiveOpioids) != 1 || s.ActiveOpioids[0].Key != "ok" {
		t.Errorf("active %+v", s.ActiveOpioids)
	}
	if s.DailyMME != 60 || !s.DailyMMEAtLeast {
		t.Errorf("total %v at least %v", s.DailyMME, s.DailyMMEAtLeast)
	}
	var skipped []string
	for _, k := range s.Skipped {
		skipped = append(skipped, k.Key+": "+k.Reason)
	}
	want := []string{"err: its status is entered-in-error", "partial: it has no full date in whenHandedOver or whenPrepared", "nodays: it has no days supply"}
	if !slices.Equal(skipped, want) {
		t.Errorf("skipped %q", skipped)
	}
	// Undated and cancelled dispenses are not counted for providers; one
	// with no days supply is.
	if got := keys(s.Last6Months.Dispenses); !slices.Equal(got, []string{"nodays", "ok"}) {
		t.Errorf("counted %v", got)
	}
}

func TestSeveralPatients(t *testing.T) {
	h := history(t,
		patient("p1", "Samuels", "August", "1989-03-12"), patient("p2", "Samuels", "Augustus", "1989-03-12"),
		dispense("d1", oxy10, 120, 30, "2024-01-01", subject("p1")),
		dispense("d2", oxy10, 120, 30, "2024-01-10", subject("p2")),
	)
	s := Summarize(h, at("2024-01-15"), Options{})
	f := s.Flags[0]
	if f.Code != FlagPatientMatches || f.Severity != SeverityHigh || f.Detail != "The responder returned 2 possible patient matches; review before acting." {
		t.Errorf("%+v", f)
	}
	if !slices.Equal(keys(f.On), []string{"p1", "p2"}) || f.On[0].Display != "Samuels, August, born 1989-03-12" {
		t.Errorf("on %+v", f.On)
	}
	// Findings resting on both say so.
	for _, code := range []FlagCode{FlagDailyMME, FlagEarlyRefill} {
		g := flagsOf(s, code)
		if len(g) != 1 || !strings.HasSuffix(g[0].Detail, "These records belong to 2 different patient records.") {
			t.Errorf("%s: %+v", code, g)
		}
	}
	// One Patient: no notice.
	s = Summarize(history(t, patient("p1", "Samuels", "August", "1989-03-12")), at("2024-01-15"), Options{})
	if len(s.Flags) != 0 || len(s.Patients) != 1 {
		t.Errorf("%+v", s)
	}
}

// TestFixtures runs the IG's example histories.
func TestFixtures(t *testing.T) {
	t.Run("history-result-2", func(t *testing.T) {
		// Two PDMPs, two Patients, an alert 03; codeine (5 days from
		// 2023-06-05, whenHandedOver absent) and alprazolam (30 days from
		// 2023-07-08).
		h := fixture(t, "Bundle-pdmp-bundle-history-result-2.json")
		s := Summarize(h, at("2023-06-07T12:00:00Z"), Options{})
		if len(s.Flags) != 1 || s.Flags[0].Code != FlagPatientMatches || !slices.Equal(keys(s.Flags[0].On), []string{"patient-res-1", "patient-res-2"}) {
			t.Errorf("flags %+v", s.Flags)
		}
		if len(s.Alerts) != 1 || s.Alerts[0].Code.Code != "03" || s.Alerts[0].resource == nil {
			t.Errorf("alerts %+v", s.Alerts)
		}
		// 30 mg × 10 ÷ 5 days × 0.15.
		if len(s.ActiveOpioids) != 1 || s.ActiveOpioids[0].Key != "meddispense-res-1" || s.DailyMME != 9 || s.ActiveOpioids[0].Source != MMEComputed {
			t.Errorf("active %+v total %v", s.ActiveOpioids, s.DailyMME)
		}
		s = Summarize(h, at("2023-07-10"), Options{})
		// Marie Fiorella comes from both PDMPs with one NPI and two DEA
		// numbers: one prescriber. The two pharmacies differ.
		if c := s.Last6Months; c.Prescribers != 1 || c.Pharmacies != 2 || len(c.Dispenses) != 2 {
			t.Errorf("6 months %+v", c)
		}
		if len(s.ActiveOpioids) != 0 || len(flagsOf(s, FlagOpioidBenzo)) != 0 {
			t.Errorf("%+v", s)
		}
	})
	t.Run("output-parameters-1", func(t *testing.T) {
		// The dispense carries the IG's MME extension, 18: four codeine
		// 30 mg tablets a day at most (1 every 6 to 8 hours) × 0.15. As a
		// per-prescription total it would be 67.5 (15 × 30 × 0.15).
		s := Summarize(fixture(t, "Parameters-pdmp-history-output-parameters-1.json"), at("2023-06-06"), Options{})
		if len(s.ActiveOpioids) != 1 || s.ActiveOpioids[0].Source != MMEReported || s.DailyMME != 18 {
			t.Errorf("active %+v total %v", s.ActiveOpioids, s.DailyMME)
		}
		if c := s.Last6Months; c.Pharmacies != 1 || c.UnknownPrescriber != 1 {
			t.Errorf("%+v", c)
		}
	})
	for _, name := range []string{"Bundle-pdmp-bundle-history-result-1.json", "Parameters-pdmp-history-output-parameters-2-minimal-history.json"} {
		t.Run(name, func(t *testing.T) {
			s := Summarize(fixture(t, name), at("2023-06-06"), Options{})
			if len(s.Flags) != 0 || len(s.ActiveOpioids) != 1 || s.DailyMME != 9 {
				t.Errorf("%+v", s)
			}
		})
	}
}

func TestNilHistory(t *testing.T) {
	now := at("2024-01-01")
	s := Summarize(nil, now, Options{})
	if !s.At.Equal(now) || len(s.Flags) != 0 || s.DailyMME != 0 || !s.Last6Months.Since.Equal(now.AddDate(0, -6, 0)) {
		t.Errorf("%+v", s)
	}
	if _, err := s.FHIR(); err != nil {
		t.Fatal(err)
	}
}
