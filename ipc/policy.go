package ipc

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Permission is a family of routes a Rule may permit; the configuration
// file calls them operations.
type Permission string

// Permissions a Rule may grant.
const (
	PermQuery  Permission = "query"  // POST the FHIR operations, GET metadata (per responder)
	PermJobs   Permission = "jobs"   // GET and DELETE /jobs/{id}
	PermStatus Permission = "status" // GET /status
)

// Policy says who may call the API and what each caller may do. It mirrors
// the configuration file's callers list.
type Policy struct {
	Rules []Rule
}

// Rule admits the callers it matches. Rules are tried in order and the
// first match decides: put narrow rules before broad ones. A caller that
// matches no rule gets 403 on every route; one that matches gets 403 on
// the routes its rule does not permit. Nobody is admitted implicitly, not
// even root or SYSTEM.
type Rule struct {
	// Name identifies the rule in logs and is passed to the backend as
	// Caller.Name (for audit and job ownership). Required, unique.
	Name string
	// Users match the caller's user: on a Unix socket a user name or a
	// numeric uid; on a named pipe an account name (resolved to its SID).
	Users []string
	// Groups match any of the caller's groups: on a Unix socket a group
	// name or numeric gid; on a named pipe a group name (resolved to its SID).
	Groups []string
	// SIDs match the pipe client's user or any enabled group, as SID
	// strings such as S-1-5-32-544.
	SIDs []string
	// TCPCredential admits loopback TCP callers that present the bearer
	// credential.
	TCPCredential bool
	// Responders this rule may query, or "*" for all. Empty permits none.
	Responders []string
	// Operations permitted. Required: a rule that permits nothing is a
	// configuration mistake.
	Operations []Permission
}

// policy is a Policy with names resolved to ids once, when it is set: a
// name that does not resolve is a configuration error to report at start,
// not a silent non-match at every request.
type policy struct {
	rules []*rule
}

type rule struct {
	name          string
	uids, gids    []int
	sids          []string
	tcpCredential bool
	allResponders bool
	responders    []string
	ops           []Permission
}

var sidRE = regexp.MustCompile(`^S-1-[0-9]+(-[0-9]+)+$`)

// accounts resolves the user and group names of a policy to what Callers
// carry on this OS: a uid or gid on Unix, a SID on Windows. osAccounts is
// the real one; tests use their own so the handler tests run anywhere.
type accounts interface {
	user(name string) (uid int, sid string, err error)
	group(name string) (gid int, sid string, err error)
}

func compilePolicy(p Policy, acct accounts) (*policy, error) {
	out := &policy{}
	seen := map[string]bool{}
	for i, r := range p.Rules {
		if r.Name == "" || seen[r.Name] {
			return nil, fmt.Errorf("ipc: policy rule %d: name %q is empty or not unique", i, r.Name)
		}
		seen[r.Name] = true
		c := &rule{name: r.Name, tcpCredential: r.TCPCredential}
		for _, u := range r.Users {
			id, sid, err := acct.user(u)
			if err != nil {
				return nil, fmt.Errorf("ipc: policy rule %q: user %q: %w", r.Name, u, err)
			}
			c.add(id, sid, &c.uids)
		}
		for _, g := range r.Groups {
			id, sid, err := acct.group(g)
			if err != nil {
				return nil, fmt.Errorf("ipc: policy rule %q: group %q: %w", r.Name, g, err)
			}
			c.add(id, sid, &c.gids)
		}
		for _, s := range r.SIDs {
			s = strings.ToUpper(s)
			if !sidRE.MatchString(s) {
				return nil, fmt.Errorf("ipc: policy rule %q: %q is not a SID", r.Name, s)
			}
			c.sids = append(c.sids, s)
		}
		if len(c.uids)+len(c.gids)+len(c.sids) == 0 && !c.tcpCredential {
			return nil, fmt.Errorf("ipc: policy rule %q matches nobody", r.Name)
		}
		for _, name := range r.Responders {
			if name == "*" {
				c.allResponders = true
			} else {
				c.responders = append(c.responders, name)
			}
		}
		if len(r.Operations) == 0 {
			return nil, fmt.Errorf("ipc: policy rule %q permits no operation", r.Name)
		}
		for _, op := range r.Operations {
			if op != PermQuery && op != PermJobs && op != PermStatus {
				return nil, fmt.Errorf("ipc: policy rule %q: unknown operation %q", r.Name, op)
			}
		}
		c.ops = slices.Clone(r.Operations)
		out.rules = append(out.rules, c)
	}
	return out, nil
}

// add records a resolved account: a numeric id on Unix, a SID on Windows.
func (r *rule) add(id int, sid string, ids *[]int) {
	if sid != "" {
		r.sids = append(r.sids, sid)
		return
	}
	*ids = append(*ids, id)
}

// match returns the first rule that admits c, or nil.
func (p *policy) match(c Caller) *rule {
	for _, r := range p.rules {
		if r.admits(c) {
			return r
		}
	}
	return nil
}

func (r *rule) admits(c Caller) bool {
	switch c.Transport {
	case TransportTCP:
		return r.tcpCredential && c.Credential
	case TransportUnix:
		return slices.Contains(r.uids, c.UID) || slices.ContainsFunc(c.GIDs, func(g int) bool { return slices.Contains(r.gids, g) })
	case TransportPipe:
		return slices.ContainsFunc(c.SIDs, func(s string) bool { return slices.Contains(r.sids, s) })
	}
	return false
}

func (r *rule) permits(p Permission) bool { return slices.Contains(r.ops, p) }

func (r *rule) mayQuery(responder string) bool {
	return r.allResponders || slices.Contains(r.responders, responder)
}
