package clinical

// The drug tables. Ingredients are matched as whole lower-case words of a
// medication's name (the RxNorm name, else the text the responder sent),
// so "oxycodone" never matches "oxymorphone" and "morphine" never matches
// "hydromorphone". docs/clinical-summary.md reproduces these tables; keep
// the two in step.

// mmeFactors are the morphine milligram equivalent conversion factors of
// the CDC Clinical Practice Guideline for Prescribing Opioids for Pain —
// United States, 2022 (MMWR Recomm Rep 2022;71(No. RR-3):1–95), Table
// "Morphine milligram equivalent doses for commonly prescribed opioids for
// pain management". A factor multiplies the daily dose in mg, except
// fentanyl's, which multiplies the transdermal delivery rate in mcg/hr.
// The CDC's factors are for oral opioids and transdermal fentanyl, so other
// routes are not converted (see computeMME).
var mmeFactors = map[string]float64{
	"codeine":       0.15,
	"fentanyl":      2.4, // transdermal, per mcg/hr
	"hydrocodone":   1.0,
	"hydromorphone": 5.0,
	"methadone":     4.7,
	"morphine":      1.0,
	"oxycodone":     1.5,
	"oxymorphone":   3.0,
	"tapentadol":    0.4,
	"tramadol":      0.2,
}

// buprenorphine is an opioid that is listed but never counted in the daily
// MME: the CDC table gives it no factor (a partial agonist, also used to
// treat opioid use disorder), and a conversion would mislead.
const buprenorphine = "buprenorphine"

// otherOpioids are opioid ingredients without a CDC factor. They make a
// dispense an opioid, so it is listed and counted for the opioid and
// benzodiazepine overlap, but its MME is unknown unless the responder
// reports one.
var otherOpioids = []string{
	"alfentanil", "benzhydrocodone", buprenorphine, "butorphanol", "dihydrocodeine", "levorphanol",
	"meperidine", "oliceridine", "opium", "pentazocine", "remifentanil", "sufentanil",
}

// benzodiazepines are the ingredients that make a dispense a
// benzodiazepine for the opioid and benzodiazepine overlap.
var benzodiazepines = []string{
	"alprazolam", "chlordiazepoxide", "clobazam", "clonazepam", "clorazepate", "diazepam", "estazolam",
	"flurazepam", "lorazepam", "midazolam", "oxazepam", "quazepam", "temazepam", "triazolam",
}

// fentanylPatchHours is how long one fentanyl transdermal system is worn
// when its name does not say ("72 HR fentanyl ..."): every fentanyl
// transdermal system sold in the US is labelled for 72 hours.
const fentanylPatchHours = 72

// kind is what an ingredient is, for the summary's purposes.
type kind int

const (
	otherDrug kind = iota
	opioid
	benzodiazepine
)

// ingredientKinds indexes the tables above.
var ingredientKinds = func() map[string]kind {
	m := map[string]kind{}
	for name := range mmeFactors {
		m[name] = opioid
	}
	for _, name := range otherOpioids {
		m[name] = opioid
	}
	for _, name := range benzodiazepines {
		m[name] = benzodiazepine
	}
	return m
}()
