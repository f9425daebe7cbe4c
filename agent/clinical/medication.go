package clinical

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
)

// product is what a medication's name says about it: its ingredients with
// their strengths, and its route. Names are RxNorm's normalized ones
// ("Hydrocodone Bitartrate 5 MG / Acetaminophen 325 MG Oral Tablet",
// "72 HR fentanyl 0.025 MG/HR Transdermal System") or free text written
// the same way; what cannot be read is left out rather than guessed, and
// the MME computation then says why it has no answer.
type product struct {
	ingredients []ingredient
	route       route
	patchHours  float64 // wear time of one transdermal system ("72 HR ..."); 0 when not stated
}

type ingredient struct {
	// name is a table name ("oxycodone") when one of the name's words is
	// in the tables, else the words before the strength without salts.
	name string
	kind kind
	// mg is the strength in mg per unit, per mL or per hour (per says
	// which); 0 when the name gives none that can be attributed.
	mg  float64
	per per
}

type per int

const (
	perUnit per = iota // a tablet, capsule or other countable unit
	perML
	perHour // a transdermal delivery rate
	perOther
)

type route int

const (
	routeUnknown route = iota
	routeOral
	routeTransdermal
	routeOther // injectable, buccal, nasal...: the CDC factors do not apply
)

var (
	// strengthRE finds "10 MG", "0.025 MG/HR", "5 MG/ML", "2.5 mg/5 ml".
	// The number must follow a space or start the text, so that the
	// "325" of "hydrocodone/apap 5/325 mg" (whose is it?) is not read.
	strengthRE = regexp.MustCompile(`(?:^|\s)(\d+(?:\.\d+)?)\s*(mcg|mg|g)\b(?:\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+))?`)
	// perVolumeRE finds RxNorm's "... per 15 ML" or "... in 15 ML", which
	// makes every strength before it per that volume.
	perVolumeRE = regexp.MustCompile(`\b(?:per|in)\s+(\d+(?:\.\d+)?)\s*ml\b`)
	// patchHoursRE finds the wear time RxNorm puts first: "72 HR fentanyl".
	patchHoursRE = regexp.MustCompile(`^(\d+(?:\.\d+)?)\s*hr\b`)
	wordRE       = regexp.MustCompile(`[a-z]+`)
)

// nameNoise are words of an ingredient's name that do not change which
// drug it is: salts, and the "HR" and "ML" of RxNorm's prefixes.
var nameNoise = []string{
	"acetate", "besylate", "bitartrate", "bromide", "calcium", "citrate", "hcl", "hr", "hydrochloride",
	"maleate", "mesylate", "ml", "napsylate", "phosphate", "polistirex", "potassium", "sodium", "sulfate", "tartrate",
}

// Words of a dose form that tell the route. Transdermal is looked for
// first, then any other non-oral route (a "Sublingual Tablet" is not
// oral), then oral.
var (
	transdermalWords = []string{"transdermal", "patch", "patches"}
	nonOralWords     = []string{
		"buccal", "cartridge", "film", "implant", "inhalation", "injectable", "injection", "intravenous", "lozenge",
		"nasal", "rectal", "spray", "sublingual", "suppositories", "suppository", "syringe", "topical", "troche",
	}
	oralWords = []string{"cap", "caps", "capsule", "capsules", "oral", "tab", "tablet", "tablets", "tabs"}
)

// parseName reads one medication name.
func parseName(name string) product {
	lower := strings.ToLower(name)
	var p product
	words := wordRE.FindAllString(lower, -1)
	switch {
	case hasAny(words, transdermalWords):
		p.route = routeTransdermal
	case hasAny(words, nonOralWords):
		p.route = routeOther
	case hasAny(words, oralWords):
		p.route = routeOral
	}
	if m := patchHoursRE.FindStringSubmatch(lower); m != nil {
		p.patchHours, _ = strconv.ParseFloat(m[1], 64) // the pattern admits only numbers
	}
	volume := 0.0
	if m := perVolumeRE.FindStringSubmatch(lower); m != nil {
		volume, _ = strconv.ParseFloat(m[1], 64)
	}
	// RxNorm separates the ingredients of a combination with " / ".
	for part := range strings.SplitSeq(lower, " / ") {
		ing, ok := parseIngredient(part)
		if !ok {
			continue
		}
		if ing.per == perUnit && volume > 0 && ing.mg > 0 {
			ing.mg, ing.per = ing.mg/volume, perML
		}
		p.ingredients = append(p.ingredients, ing)
	}
	return p
}

// parseIngredient reads "oxycodone hydrochloride 10 mg oral tablet": the
// words before the strength name the ingredient.
func parseIngredient(part string) (ingredient, bool) {
	var ing ingredient
	before := part
	if m := strengthRE.FindStringSubmatchIndex(part); m != nil {
		before = part[:m[0]]
		value, _ := strconv.ParseFloat(part[m[2]:m[3]], 64) // the pattern admits only numbers
		switch part[m[4]:m[5]] {
		case "mcg":
			value /= 1000
		case "g":
			value *= 1000
		}
		ing.mg, ing.per = value, perUnit
		if m[8] >= 0 { // a denominator: MG/HR, MG/ML, MG/5 ML
			divisor := 1.0
			if m[6] >= 0 {
				divisor, _ = strconv.ParseFloat(part[m[6]:m[7]], 64)
			}
			switch unit := part[m[8]:m[9]]; {
			case unit == "ml" && divisor > 0:
				ing.mg, ing.per = value/divisor, perML
			case (unit == "hr" || unit == "h" || unit == "hour") && divisor == 1:
				ing.per = perHour
			default:
				ing.per = perOther
			}
		}
		// A strength after "a/b" cannot be attributed to one of them.
		if strings.Contains(before, "/") {
			ing.mg = 0
		}
	}
	words := wordRE.FindAllString(before, -1)
	for _, w := range words {
		if k, ok := ingredientKinds[w]; ok {
			ing.name, ing.kind = w, k
			return ing, true
		}
	}
	words = slices.DeleteFunc(words, func(w string) bool { return slices.Contains(nameNoise, w) })
	ing.name = strings.Join(words, " ")
	return ing, ing.name != ""
}

func hasAny(words, set []string) bool {
	return slices.ContainsFunc(words, func(w string) bool { return slices.Contains(set, w) })
}

// readProduct reads a medication from the names the responder gave it:
// the RxNorm coding's display, then the text, then other codings'
// displays. The first name whose ingredients all have strengths wins;
// failing that, the first that names a table ingredient, so that a dispense
// is still known to be an opioid or a benzodiazepine.
func readProduct(cc pdmp.CodeableConcept) product {
	var names []string
	if c, ok := cc.Find(pdmp.SystemRxNorm); ok {
		names = append(names, c.Display)
	}
	names = append(names, cc.Text)
	for _, c := range cc.Coding {
		names = append(names, c.Display)
	}
	var fallback product
	for _, name := range names {
		if name == "" {
			continue
		}
		p := parseName(name)
		if p.key() != "" {
			return p
		}
		if fallback.ingredients == nil && slices.ContainsFunc(p.ingredients, func(i ingredient) bool { return i.kind != otherDrug }) {
			fallback = p
		}
	}
	return fallback
}

// key identifies the drug by its ingredients and strengths, for finding
// refills of the same drug; "" unless every ingredient has a strength.
func (p product) key() string {
	if len(p.ingredients) == 0 {
		return ""
	}
	var parts []string
	for _, i := range p.ingredients {
		if i.mg == 0 {
			return ""
		}
		parts = append(parts, fmt.Sprintf("%s %g/%d", i.name, i.mg, i.per))
	}
	slices.Sort(parts)
	return strings.Join(parts, " + ")
}

// names returns the names of the ingredients of one kind.
func (p product) names(k kind) []string {
	var names []string
	for _, i := range p.ingredients {
		if i.kind == k && !slices.Contains(names, i.name) {
			names = append(names, i.name)
		}
	}
	return names
}

type unitKind int

const (
	otherUnit unitKind = iota
	countUnit
	volumeUnit
)

// Units of MedicationDispense.quantity. The IG asks for "each" for
// countable units; the rest are what pharmacy systems and the ASAP
// reporting format (EA, ML) also send.
var (
	countUnits  = []string{"ea", "each", "tab", "tablet", "tablets", "cap", "capsule", "capsules", "patch", "patches", "system", "systems", "unit", "units"}
	volumeUnits = []string{"ml", "milliliter", "milliliters", "millilitre", "millilitres"}
)

func quantityUnit(q *pdmp.Quantity) unitKind {
	for _, u := range []string{q.Unit, q.Code} {
		u = strings.Trim(strings.ToLower(strings.TrimSpace(u)), "{}")
		switch {
		case slices.Contains(countUnits, u):
			return countUnit
		case slices.Contains(volumeUnits, u):
			return volumeUnit
		}
	}
	return otherUnit
}

// computeMME returns the MME per day of an opioid dispense, from its
// strength, quantity and days supply and the CDC factors, or why it
// cannot:
//
//	oral:        mg per unit (or per mL) × quantity ÷ days supply × factor
//	fentanyl:    mcg/hr × 2.4 × quantity × hours worn per system ÷ 24 ÷ days supply
//
// The fentanyl form is the CDC's "mcg/hr × 2.4" for continuous wear,
// scaled by how much of the days supply the systems dispensed cover (ten
// 72-hour systems over 30 days are one worn at a time). days is positive:
// only dispenses with a days supply are placed in time.
func computeMME(p product, q *pdmp.Quantity, days float64) (float64, string) {
	if q == nil || q.Value <= 0 {
		return 0, "no quantity"
	}
	total := 0.0
	for _, ing := range p.ingredients {
		if ing.kind != opioid {
			continue
		}
		factor, ok := mmeFactors[ing.name]
		switch {
		case !ok:
			return 0, "no CDC conversion factor for " + ing.name
		case ing.mg == 0:
			return 0, "the strength of " + ing.name + " is not in the medication name"
		case ing.name == "fentanyl":
			if p.route != routeTransdermal || ing.per != perHour {
				return 0, "the CDC factor for fentanyl is for transdermal systems only"
			}
			if quantityUnit(q) != countUnit {
				return 0, fmt.Sprintf("quantity unit %q is not a count of systems", q.Unit)
			}
			hours := p.patchHours
			if hours == 0 {
				hours = fentanylPatchHours
			}
			total += ing.mg * 1000 * factor * q.Value * hours / 24 / days
		case p.route == routeUnknown:
			return 0, "the route is not in the medication name"
		case p.route != routeOral:
			return 0, "not an oral form (the CDC factors are for oral opioids)"
		case ing.per == perUnit && quantityUnit(q) == countUnit, ing.per == perML && quantityUnit(q) == volumeUnit:
			total += ing.mg * q.Value / days * factor
		default:
			return 0, fmt.Sprintf("quantity unit %q does not match the strength", q.Unit)
		}
	}
	return round2(total), ""
}

// round2 rounds to hundredths, so that float arithmetic (0.15 × 120 is
// 17.999999999999996) does not decide a threshold.
func round2(x float64) float64 { return math.Round(x*100) / 100 }

// medicationName is how the summary names a medication: the RxNorm name,
// else the responder's text, else any coding's display or code.
func medicationName(cc pdmp.CodeableConcept) string {
	if c, ok := cc.Find(pdmp.SystemRxNorm); ok && c.Display != "" {
		return c.Display
	}
	if cc.Text != "" {
		return cc.Text
	}
	for _, c := range cc.Coding {
		if c.Display != "" {
			return c.Display
		}
	}
	for _, c := range cc.Coding {
		if c.Code != "" {
			return c.System + " " + c.Code
		}
	}
	return "unnamed medication"
}
