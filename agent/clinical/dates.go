package clinical

import "time"

// day is a calendar date, counted in days since 1970-01-01. Supply windows
// are whole days from the dispense date, as pharmacies count days supply;
// a dispense date is read as written, in the pharmacy's own calendar.
type day int

// parseDay reads the date of a FHIR date or dateTime. A partial date
// ("2023-06") has no day to count from, so it is not read.
func parseDay(s string) (day, bool) {
	if len(s) < 10 || len(s) > 10 && s[10] != 'T' {
		return 0, false
	}
	t, err := time.Parse(time.DateOnly, s[:10])
	if err != nil {
		return 0, false
	}
	return dayOf(t), true
}

func dayOf(t time.Time) day {
	return day(time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

func (d day) time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

func (d day) String() string { return d.time().Format(time.DateOnly) }

// instant places now on the same scale: its date in its own location plus
// the part of that day gone by, so that a supply ending at midnight has
// ended at 00:00 and not before.
func instant(now time.Time) float64 {
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	return float64(dayOf(now)) + float64(now.Sub(midnight))/float64(24*time.Hour)
}

// monthsBefore returns the same day of the month n months earlier, or that
// month's last day when it is shorter (six months before 31 August is the
// last day of February, not 3 March as time.AddDate would have it).
func monthsBefore(d day, n int) day {
	t := d.time()
	first := time.Date(t.Year(), t.Month()-time.Month(n), 1, 0, 0, 0, 0, time.UTC)
	last := first.AddDate(0, 1, -1).Day()
	return dayOf(first.AddDate(0, 0, min(t.Day(), last)-1))
}
