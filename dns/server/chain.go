package server

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Handler is one stage of the handler chain, in the CoreDNS shape. ServeDNS either writes a
// reply and returns its rcode, or writes nothing and returns SERVFAIL, REFUSED, FORMERR or
// NOTIMP, in which case the server writes a reply with that rcode (see ClientWrite).
type Handler interface {
	Name() string
	ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (rcode int, err error)
}

// StageError prefixes an error with the stage that returned it.
type StageError struct {
	Stage string
	Err   error
}

func (e *StageError) Error() string { return "dns stage " + e.Stage + ": " + e.Err.Error() }

// Unwrap exposes the cause.
func (e *StageError) Unwrap() error { return e.Err }

// ClientWrite reports whether a handler returning rcode has written the reply itself.
func ClientWrite(rcode int) bool {
	switch rcode {
	case dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeFormatError, dns.RcodeNotImplemented:
		return false
	}
	return true
}

// NextOrFailure calls next, or returns SERVFAIL when there is no next stage.
func NextOrFailure(name string, next Handler, ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if next != nil {
		return next.ServeDNS(ctx, w, r)
	}
	return dns.RcodeServerFailure, &StageError{Stage: name, Err: fmt.Errorf("no next stage for %s", questionString(r))}
}

func questionString(r *dns.Msg) string {
	if len(r.Question) == 0 {
		return "empty question"
	}
	q := r.Question[0]
	return q.Name + " " + dns.TypeToString[q.Qtype]
}

// request carries what the stages learn about a query. The server fills the first fields,
// the acl stage fills views.
type request struct {
	gateway netip.Addr // the address the query arrived on
	src     netip.Addr
	tcp     bool
	snap    *snapshot
	views   []*netView // networks the client may see
	written bool       // a reply was sent (by writeReply)
	rcode   int        // the rcode of the reply sent
	// async: a stage handed the query to a goroutine that answers and counts it later.
	async bool
	start time.Time // when the metrics stage saw the query (zero without that stage)
}

type requestKey struct{}

func requestFrom(ctx context.Context) *request {
	req, _ := ctx.Value(requestKey{}).(*request)
	return req
}

// stageMakers builds each stage around the next one.
var stageMakers = map[string]func(s *Server, next Handler) Handler{
	"metrics": func(s *Server, next Handler) Handler { return &metricsStage{next: next, m: s.metrics} },
	"guard":   func(s *Server, next Handler) Handler { return &guardStage{next: next} },
	"acl":     func(s *Server, next Handler) Handler { return &aclStage{next: next} },
	"local": func(s *Server, next Handler) Handler {
		return &localStage{next: next, ttl: uint32(s.opts.TTL.Seconds())}
	},
	"cache":   func(s *Server, next Handler) Handler { return newCacheStage(s, next) },
	"forward": func(s *Server, next Handler) Handler { return newForwardStage(s, next) },
}

// buildChain links the stages named in order and returns the first.
func buildChain(s *Server, order []string) Handler {
	var next Handler
	for i := len(order) - 1; i >= 0; i-- {
		next = stageMakers[order[i]](s, next)
	}
	return next
}

// guardStage rejects what a container resolver must not be used for: several questions,
// other opcodes and classes, and ANY or zone transfers (amplification).
type guardStage struct{ next Handler }

func (g *guardStage) Name() string { return "guard" }

func (g *guardStage) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if r.Opcode != dns.OpcodeQuery {
		return dns.RcodeNotImplemented, nil
	}
	if len(r.Question) != 1 || r.Response {
		return dns.RcodeFormatError, nil
	}
	q := r.Question[0]
	if q.Qclass != dns.ClassINET {
		return dns.RcodeRefused, nil
	}
	switch q.Qtype {
	case dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR:
		return dns.RcodeRefused, nil
	}
	return NextOrFailure(g.Name(), g.next, ctx, w, r)
}

// aclStage finds the networks the client belongs to and refuses clients of none: the
// server is not an open resolver.
type aclStage struct{ next Handler }

func (a *aclStage) Name() string { return "acl" }

func (a *aclStage) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	req := requestFrom(ctx)
	if req == nil {
		return dns.RcodeServerFailure, &StageError{Stage: a.Name(), Err: fmt.Errorf("no request state")}
	}
	req.views = req.snap.scope(req.gateway, req.src)
	if len(req.views) == 0 {
		return dns.RcodeRefused, nil
	}
	return NextOrFailure(a.Name(), a.next, ctx, w, r)
}
