package plugins

import (
	"errors"
	"fmt"
	"log/slog"
)

// Undo collects the undo of every side effect of an operation, to run in reverse when the
// operation fails. The idiom, with no outer err that := could shadow:
//
//	undo := plugins.NewUndo(call.Log)
//	defer undo.Rollback()
//	link, err := createVeth(...)
//	if err != nil { return err }
//	undo.Push("delete host veth", func() error { return deleteLink(link) })
//	...
//	undo.Commit() // success: nothing to undo
type Undo struct {
	log       *slog.Logger
	steps     []undoStep
	committed bool
}

type undoStep struct {
	name string
	fn   func() error
}

// NewUndo returns an empty stack that logs failed undos to log (may be nil).
func NewUndo(log *slog.Logger) *Undo { return &Undo{log: log} }

// Push registers the undo of a side effect that has just succeeded.
func (u *Undo) Push(name string, fn func() error) { u.steps = append(u.steps, undoStep{name, fn}) }

// Commit marks the operation as successful: Rollback becomes a no-op.
func (u *Undo) Commit() { u.committed = true }

// Len is the number of registered undos.
func (u *Undo) Len() int { return len(u.steps) }

// Rollback runs the registered undos in reverse order unless Commit was called. It keeps
// going when an undo fails and returns all failures joined.
func (u *Undo) Rollback() error {
	if u.committed {
		return nil
	}
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		step := u.steps[i]
		if err := step.fn(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", step.name, err))
			if u.log != nil {
				u.log.Error("rollback step failed", "step", step.name, "err", err)
			}
		}
	}
	u.steps = nil
	u.committed = true
	return errors.Join(errs...)
}
