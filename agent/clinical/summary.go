package clinical

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
)

// Options are the thresholds of the flags. The zero value means the
// defaults, which docs/clinical-summary.md explains; a state or a
// deployment may use others.
type Options struct {
	// MMEModerate and MMEHigh are the total MME/day at and above which
	// the daily-mme flag is raised with severity moderate and high
	// (defaults 50 and 90).
	MMEModerate, MMEHigh float64
	// MinPrescribers and MinPharmacies within the last 6 months make a
	// multiple-provider episode (defaults 5 and 5; both must be reached).
	MinPrescribers, MinPharmacies int
	// EarlyRefillShare: a refill of the same drug with more than this
	// share of the earlier supply left is flagged moderate, one with less
	// left low (default 0.25).
	EarlyRefillShare float64
}

func (o Options) withDefaults() Options {
	if o.MMEModerate <= 0 {
		o.MMEModerate = 50
	}
	if o.MMEHigh <= 0 {
		o.MMEHigh = 90
	}
	if o.MinPrescribers <= 0 {
		o.MinPrescribers = 5
	}
	if o.MinPharmacies <= 0 {
		o.MinPharmacies = 5
	}
	if o.EarlyRefillShare <= 0 {
		o.EarlyRefillShare = 0.25
	}
	return o
}

// Summary is the prescriber's first screen. Everything in it is read or
// computed from the responder's history; records it rests on are named by
// Ref. FHIR gives its wire form.
type Summary struct {
	At time.Time // the now it was computed for
	// Patients are the responder's Patient records; more than one means
	// an uncertain match (or records from several PDMPs), and Flags then
	// begins with a multiple-patient-matches flag.
	Patients []Ref
	// Alerts are the responder's own DetectedIssues, in the Bundle's
	// order, except those entered in error or cancelled.
	Alerts []Alert
	// Flags are the summary's findings: the patient-match notice, then
	// daily MME, opioid and benzodiazepine overlap, multiple providers,
	// and early refills in date order.
	Flags []Flag
	// ActiveOpioids are the opioid dispenses whose supply has not run out
	// at At, by start date.
	ActiveOpioids []OpioidDispense
	// DailyMME is the total MME/day of the active opioids whose MME is
	// known. DailyMMEAtLeast says it is a lower bound: an active opioid's
	// MME is unknown, or an opioid dispense could not be placed in time.
	DailyMME        float64
	DailyMMEAtLeast bool
	// Prescribers and pharmacies seen in the last 6 and 12 months.
	Last6Months, Last12Months ProviderCounts
	// Skipped are the dispenses left out of the findings on supply
	// (active opioids, overlaps, early refills), and why. Those without a
	// date, or never dispensed by their status, are also left out of the
	// provider counts.
	Skipped []Skipped
}

// Ref names a record of the responder's Bundle that a finding rests on.
type Ref struct {
	pdmp.Entry
	Type string // its resourceType: MedicationDispense or Patient
	// Display describes it for the clinician, from the record alone:
	// "Oxycodone Hydrochloride 10 MG Oral Tablet, 2024-03-01, 30 days
	// [meddispense-1]".
	Display string
	// Subject is the Patient a dispense belongs to, as the responder
	// referenced it.
	Subject pdmp.Reference
}

// Reference is how FHIR points at the record: the fullUrl the responder's
// Bundle gave it, else Type/id.
func (r Ref) Reference() string {
	if r.FullURL != "" {
		return r.FullURL
	}
	return r.Type + "/" + r.Key
}

// Alert is one of the responder's own alerts.
type Alert struct {
	pdmp.Alert
	resource json.RawMessage // the DetectedIssue as sent, when the Bundle has it
}

// Severity is a flag's severity, in DetectedIssue.severity's codes.
type Severity string

// The severities.
const (
	SeverityHigh     Severity = "high"
	SeverityModerate Severity = "moderate"
	SeverityLow      Severity = "low"
)

// FlagCode says what a flag is about; the codes are those of the local
// code system CodeSystemFlag.
type FlagCode string

// The flags.
const (
	FlagPatientMatches    FlagCode = "multiple-patient-matches"
	FlagDailyMME          FlagCode = "daily-mme"
	FlagOpioidBenzo       FlagCode = "opioid-benzodiazepine-overlap"
	FlagMultipleProviders FlagCode = "multiple-provider-episode"
	FlagEarlyRefill       FlagCode = "early-refill"
)

// Flag is one finding.
type Flag struct {
	Code     FlagCode
	Severity Severity
	Detail   string // one or two sentences for the clinician
	On       []Ref  // the records it rests on, for the clinician to check
}

// MMESource says where a dispense's MME/day comes from.
type MMESource string

// The sources.
const (
	MMEReported   MMESource = "reported" // the responder's pdmp-extension-mme
	MMEComputed   MMESource = "computed" // from strength, quantity and days supply
	MMEUnknown    MMESource = "unknown"
	MMENotCounted MMESource = "not counted" // buprenorphine
)

// OpioidDispense is an active opioid dispense.
type OpioidDispense struct {
	Ref
	Ingredients []string  // its opioid ingredients, when the name gives them
	Start, End  time.Time // dates; End is the first day no longer supplied
	MME         float64   // MME/day, when Source is reported or computed
	Source      MMESource
	Note        string // why the MME is unknown or not counted
}

// ProviderCounts counts distinct prescribers and pharmacies of the
// dispenses dated on or after Since (Dispenses). UnknownPrescriber and
// UnknownPharmacy count the dispenses whose prescriber or pharmacy could
// not be told; the counts are then lower bounds.
type ProviderCounts struct {
	Since                              time.Time
	Prescribers, Pharmacies            int
	UnknownPrescriber, UnknownPharmacy int
	Dispenses                          []Ref
}

// Skipped is a dispense left out of the findings on supply.
type Skipped struct {
	Ref
	Reason string
	opioid bool
}

// record is a dispense as the summary uses it.
type record struct {
	ref        Ref
	d          *pdmp.Dispense
	product    product
	dated      bool
	start      day
	days       float64 // 0 when the dispense has no days supply
	prescriber int     // identities node, -1 when unknown
	pharmacy   int
}

func (r *record) end() float64 { return float64(r.start) + r.days }

func (r *record) supplied() bool { return r.dated && r.days > 0 }

func (r *record) isOpioid() bool {
	return len(r.product.names(opioid)) > 0 || r.d.MME != nil // only opioids have an MME
}

func (r *record) isBenzodiazepine() bool { return len(r.product.names(benzodiazepine)) > 0 }

// Summarize computes the summary of a history at now. It reads only h (and
// the Bundle in h.Raw): nothing else is looked up, and what cannot be read
// from the records is reported as unknown, never assumed.
func Summarize(h *pdmp.History, now time.Time, opts Options) Summary {
	if h == nil {
		h = &pdmp.History{}
	}
	s := &summarizer{opts: opts.withDefaults(), now: instant(now), today: dayOf(now), bundle: readBundle(h.Raw)}
	out := Summary{At: now}
	for _, p := range h.Patients {
		out.Patients = append(out.Patients, patientRef(p))
	}
	if n := len(out.Patients); n > 1 {
		out.Flags = append(out.Flags, Flag{
			Code:     FlagPatientMatches,
			Severity: SeverityHigh,
			Detail:   fmt.Sprintf("The responder returned %d possible patient matches; review before acting.", n),
			On:       out.Patients,
		})
	}
	for _, a := range h.Alerts {
		if a.Status == "entered-in-error" || a.Status == "cancelled" {
			continue
		}
		raw, ok := s.bundle.issues[a.FullURL]
		if !ok {
			raw = s.bundle.issues[a.Key]
		}
		out.Alerts = append(out.Alerts, Alert{a, raw})
	}
	out.Skipped = s.readDispenses(h)
	out.ActiveOpioids, out.DailyMME, out.DailyMMEAtLeast = s.activeOpioids(out.Skipped)
	if f, ok := s.mmeFlag(out.ActiveOpioids, out.DailyMME, out.DailyMMEAtLeast); ok {
		out.Flags = append(out.Flags, f)
	}
	if f, ok := s.opioidBenzoFlag(); ok {
		out.Flags = append(out.Flags, f)
	}
	out.Last6Months = s.providers(monthsBefore(s.today, 6))
	out.Last12Months = s.providers(monthsBefore(s.today, 12))
	if c := out.Last6Months; c.Prescribers >= s.opts.MinPrescribers && c.Pharmacies >= s.opts.MinPharmacies {
		out.Flags = append(out.Flags, Flag{
			Code:     FlagMultipleProviders,
			Severity: SeverityModerate,
			Detail: fmt.Sprintf("%d prescribers and %d pharmacies since %s (multiple-provider episode: at least %d and %d within 6 months).",
				c.Prescribers, c.Pharmacies, c.Since.Format(time.DateOnly), s.opts.MinPrescribers, s.opts.MinPharmacies) + patientsNote(c.Dispenses),
			On: c.Dispenses,
		})
	}
	out.Flags = append(out.Flags, s.earlyRefills()...)
	return out
}

type summarizer struct {
	opts    Options
	now     float64 // on the day scale
	today   day
	bundle  bundle
	records []*record
	people  identities // prescribers
	shops   identities // pharmacies
}

// patientRef describes a Patient record by what tells the candidates
// apart: names, birth date and the PDMP it comes from.
func patientRef(p pdmp.Patient) Ref {
	var names, parts []string
	for _, n := range p.Name {
		if given := strings.Join(n.Given, " "); n.Family != "" && given != "" {
			names = append(names, n.Family+", "+given)
		} else if n.Family+given != "" {
			names = append(names, n.Family+given)
		}
	}
	if len(names) > 0 {
		parts = append(parts, strings.Join(names, "; "))
	}
	if p.BirthDate != "" {
		parts = append(parts, "born "+p.BirthDate)
	}
	if p.Source != "" {
		parts = append(parts, "from "+p.Source)
	}
	if len(parts) == 0 {
		parts = append(parts, "Patient "+p.Key)
	}
	return Ref{Entry: p.Entry, Type: "Patient", Display: strings.Join(parts, ", ")}
}

// readDispenses places the dispenses in time and identifies their
// prescribers and pharmacies, and returns those it cannot place.
func (s *summarizer) readDispenses(h *pdmp.History) []Skipped {
	practitioners := make([]party, 0, len(h.Practitioners))
	for _, p := range h.Practitioners {
		practitioners = append(practitioners, party{p.Entry, p.Identifiers})
	}
	organizations := make([]party, 0, len(h.Pharmacies))
	for _, o := range h.Pharmacies {
		organizations = append(organizations, party{o.Entry, o.Identifiers})
	}
	// A dispense's performer may be a pharmacist (a Practitioner) as well
	// as the pharmacy.
	prescribers := parties("Practitioner", practitioners)
	dispensers := parties("Organization", organizations)
	maps.Copy(dispensers, prescribers)
	var skipped []Skipped
	for i := range h.Dispenses {
		d := &h.Dispenses[i]
		r := &record{d: d, product: readProduct(d.Medication)}
		date := d.WhenHandedOver
		if date == "" {
			date = d.WhenPrepared
		}
		r.start, r.dated = parseDay(date)
		if d.DaysSupply != nil && d.DaysSupply.Value > 0 {
			r.days = d.DaysSupply.Value
		}
		r.ref = dispenseRef(r)
		var reason string
		switch {
		case d.Status == "entered-in-error" || d.Status == "cancelled" || d.Status == "declined":
			skipped = append(skipped, Skipped{r.ref, "its status is " + d.Status, false})
			continue // never dispensed, or recorded in error
		case !r.dated:
			reason = "it has no full date in whenHandedOver or whenPrepared"
		case r.days == 0:
			reason = "it has no days supply"
		}
		if reason != "" {
			skipped = append(skipped, Skipped{r.ref, reason, r.isOpioid()})
		}
		var keys []string
		for _, ap := range d.AuthorizingPrescription {
			if mr, ok := s.bundle.request(ap); ok {
				keys = append(keys, actorKeys(mr.requester, prescribers)...)
			}
		}
		r.prescriber = s.people.add(keys)
		keys = nil
		for _, p := range d.Performers {
			keys = append(keys, actorKeys(p, dispensers)...)
		}
		r.pharmacy = s.shops.add(keys)
		s.records = append(s.records, r)
	}
	slices.SortStableFunc(s.records, func(a, b *record) int {
		return cmp.Or(cmp.Compare(a.start, b.start), cmp.Compare(a.ref.Key, b.ref.Key))
	})
	return skipped
}

func dispenseRef(r *record) Ref {
	parts := []string{medicationName(r.d.Medication)}
	if r.dated {
		parts = append(parts, r.start.String())
	}
	if r.days > 0 {
		parts = append(parts, formatNumber(r.days)+" days")
	}
	return Ref{
		Entry:   r.d.Entry,
		Type:    "MedicationDispense",
		Display: strings.Join(parts, ", ") + " [" + r.d.Key + "]",
		Subject: r.d.Subject,
	}
}

// activeOpioids lists the opioid dispenses whose supply has not run out —
// start + days supply later than now — and totals their MME/day.
func (s *summarizer) activeOpioids(skipped []Skipped) ([]OpioidDispense, float64, bool) {
	var list []OpioidDispense
	total := 0.0
	atLeast := slices.ContainsFunc(skipped, func(k Skipped) bool { return k.opioid })
	for _, r := range s.records {
		if !r.supplied() || !r.isOpioid() || r.end() <= s.now {
			continue
		}
		o := OpioidDispense{
			Ref:         r.ref,
			Ingredients: r.product.names(opioid),
			Start:       r.start.time(),
			End:         r.start.time().Add(time.Duration(r.days * float64(24*time.Hour))),
		}
		o.MME, o.Source, o.Note = r.mme()
		switch o.Source {
		case MMEReported, MMEComputed:
			total += o.MME
		case MMEUnknown:
			atLeast = true
		}
		list = append(list, o)
	}
	return list, round2(total), atLeast
}

// mme finds a dispense's MME/day. The responder's pdmp-extension-mme is
// MME/day by the IG's definition ("the equivalent daily morphine dose") and
// is used as sent, except for fentanyl transdermal systems, for which the
// same definition allows the value in mcg/hr, so it cannot be read safely.
func (r *record) mme() (float64, MMESource, string) {
	names := r.product.names(opioid)
	if len(names) > 0 && !slices.ContainsFunc(names, func(n string) bool { return n != buprenorphine }) {
		return 0, MMENotCounted, "buprenorphine is not counted in MME (the CDC table gives it no factor)"
	}
	patch := slices.Contains(names, "fentanyl") && r.product.route == routeTransdermal
	if r.d.MME != nil && !patch {
		return *r.d.MME, MMEReported, ""
	}
	mme, why := computeMME(r.product, r.d.Quantity, r.days)
	if why != "" {
		if patch && r.d.MME != nil {
			why += "; the PDMP's value is not used for fentanyl patches, which the IG allows in mcg/hr"
		}
		return 0, MMEUnknown, why
	}
	return mme, MMEComputed, ""
}

func (s *summarizer) mmeFlag(active []OpioidDispense, total float64, atLeast bool) (Flag, bool) {
	f := Flag{Code: FlagDailyMME, Severity: SeverityModerate}
	threshold := s.opts.MMEModerate
	switch {
	case total >= s.opts.MMEHigh:
		f.Severity, threshold = SeverityHigh, s.opts.MMEHigh
	case total < s.opts.MMEModerate:
		return Flag{}, false
	}
	amount := formatNumber(total)
	if atLeast {
		amount = "at least " + amount
	}
	f.Detail = fmt.Sprintf("Active opioid prescriptions total %s MME/day, at or above %s MME/day.", amount, formatNumber(threshold))
	for _, o := range active {
		if o.Source == MMEReported || o.Source == MMEComputed {
			f.On = append(f.On, o.Ref)
		}
	}
	f.Detail += patientsNote(f.On)
	return f, true
}

// opioidBenzoFlag finds the opioid and benzodiazepine supplies that
// overlap by at least one day, over the whole history.
func (s *summarizer) opioidBenzoFlag() (Flag, bool) {
	days := map[day]bool{}
	involved := map[*record]bool{}
	current := false
	for _, o := range s.records {
		if !o.supplied() || !o.isOpioid() {
			continue
		}
		for _, b := range s.records {
			if !b.supplied() || !b.isBenzodiazepine() || o == b {
				continue
			}
			// The supply windows [start, start+days) share the days from
			// the later start to the earlier end. Windows that only touch,
			// one ending the day the other starts, share none.
			from, to := float64(max(o.start, b.start)), math.Min(o.end(), b.end())
			if from >= to {
				continue
			}
			for d := from; d < to; d++ {
				days[day(d)] = true
			}
			current = current || from <= s.now && s.now < to
			involved[o], involved[b] = true, true
		}
	}
	if len(days) == 0 {
		return Flag{}, false
	}
	on := slices.DeleteFunc(slices.Clone(s.records), func(r *record) bool { return !involved[r] }) // in date order
	var opioids, benzos, lme []string
	for _, r := range on {
		opioids = appendNew(opioids, r.product.names(opioid)...)
		benzos = appendNew(benzos, r.product.names(benzodiazepine)...)
		if r.d.LME != nil {
			lme = append(lme, fmt.Sprintf("%s LME for the %s dispensed %s", formatNumber(*r.d.LME), medicationName(r.d.Medication), r.start))
		}
	}
	slices.Sort(opioids)
	slices.Sort(benzos)
	all := slices.Collect(maps.Keys(days))
	first, last := slices.Min(all), slices.Max(all)
	f := Flag{Code: FlagOpioidBenzo, Severity: SeverityModerate, On: refs(on)}
	f.Detail = fmt.Sprintf("Opioid (%s) and benzodiazepine (%s) supplies overlap on %s",
		orUnnamed(opioids), orUnnamed(benzos), plural(len(days), "day"))
	if first == last {
		f.Detail += fmt.Sprintf(", %s", first)
	} else {
		f.Detail += fmt.Sprintf(", %s to %s", first, last)
	}
	if current {
		f.Severity = SeverityHigh
		f.Detail += ", including today"
	}
	f.Detail += "."
	if len(lme) > 0 {
		f.Detail += " The PDMP reports " + strings.Join(lme, "; ") + "."
	}
	f.Detail += patientsNote(f.On)
	return f, true
}

// providers counts the prescribers and pharmacies of the dispenses dated
// on or after since; a dispense dated exactly on since counts.
func (s *summarizer) providers(since day) ProviderCounts {
	c := ProviderCounts{Since: since.time()}
	prescribers, pharmacies := map[int]bool{}, map[int]bool{}
	for _, r := range s.records {
		if !r.dated || r.start < since {
			continue
		}
		c.Dispenses = append(c.Dispenses, r.ref)
		if r.prescriber < 0 {
			c.UnknownPrescriber++
		} else {
			prescribers[s.people.find(r.prescriber)] = true
		}
		if r.pharmacy < 0 {
			c.UnknownPharmacy++
		} else {
			pharmacies[s.shops.find(r.pharmacy)] = true
		}
	}
	c.Prescribers, c.Pharmacies = len(prescribers), len(pharmacies)
	return c
}

// earlyRefills compares each dispense of a drug with the earlier dispense
// of that drug whose supply ends last, the supply it refills: starting
// before that supply ends is flagged, moderate when more than
// EarlyRefillShare of it was left, low otherwise. Two dispenses are of the
// same drug when they share an RxNorm code, an NDC, or ingredients and
// strengths. Flags come in the order of the refills' dates.
func (s *summarizer) earlyRefills() []Flag {
	var drugs identities
	nodes := make([]int, len(s.records))
	for i, r := range s.records {
		var keys []string
		if c, ok := r.d.Medication.Find(pdmp.SystemRxNorm); ok && c.Code != "" {
			keys = append(keys, "rxnorm:"+c.Code)
		}
		if c, ok := r.d.Medication.Find(pdmp.SystemNDC); ok && c.Code != "" {
			keys = append(keys, "ndc:"+c.Code)
		}
		if k := r.product.key(); k != "" {
			keys = append(keys, "drug:"+k)
		}
		if !r.supplied() {
			keys = nil
		}
		nodes[i] = drugs.add(keys)
	}
	var flags []Flag
	// By drug, the supply the next dispense refills; s.records is in date
	// order.
	current := map[int]*record{}
	for i, next := range s.records {
		if nodes[i] < 0 {
			continue
		}
		drug := drugs.find(nodes[i])
		prev := current[drug]
		if prev != nil && float64(next.start) < prev.end() {
			flags = append(flags, s.earlyRefill(prev, next))
		}
		if prev == nil || next.end() > prev.end() {
			current[drug] = next
		}
	}
	return flags
}

func (s *summarizer) earlyRefill(prev, next *record) Flag {
	left := prev.end() - float64(next.start)
	share := left / prev.days
	f := Flag{Code: FlagEarlyRefill, Severity: SeverityLow, On: refs([]*record{prev, next})}
	if share > s.opts.EarlyRefillShare {
		f.Severity = SeverityModerate
	}
	f.Detail = fmt.Sprintf("%s dispensed %s with %s of %s days (%d%%) of the supply dispensed %s left.",
		medicationName(next.d.Medication), next.start, formatNumber(left), formatNumber(prev.days), int(math.Round(share*100)), prev.start) +
		patientsNote(f.On)
	return f
}

// patientsNote warns when a finding rests on records of several Patient
// records: the match may be uncertain.
func patientsNote(on []Ref) string {
	var subjects []string
	for _, r := range on {
		if r.Subject.Reference != "" {
			subjects = appendNew(subjects, r.Subject.Reference)
		}
	}
	if len(subjects) < 2 {
		return ""
	}
	return fmt.Sprintf(" These records belong to %d different patient records.", len(subjects))
}

func refs(rs []*record) []Ref {
	out := make([]Ref, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ref)
	}
	return out
}

// appendNew appends the values not already in s.
func appendNew[T comparable](s []T, values ...T) []T {
	for _, v := range values {
		if !slices.Contains(s, v) {
			s = append(s, v)
		}
	}
	return s
}

func orUnnamed(names []string) string {
	if len(names) == 0 {
		return "ingredient not named"
	}
	return strings.Join(names, ", ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// formatNumber writes a number as briefly as it is exact: 60, 7.5.
func formatNumber(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
