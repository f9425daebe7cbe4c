package agent

import (
	"context"
	"fmt"
	"net/http"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
	"github.com/pdmp-agent/pdmp-agent/ipc"
	"github.com/pdmp-agent/pdmp-agent/queue"
)

// Report fetches the rendered report a finished job's answer links to,
// with the registration's token — but only from the responder's own
// origin: a link elsewhere is handed back, never followed with a token.
// Under display-only retention the answer is gone once delivered, and so
// is the link (410).
func (s *Service) Report(ctx context.Context, id string, c ipc.Caller) (ipc.JobStatus, error) {
	job, err := s.callerJob(ctx, id, c)
	if err != nil {
		return ipc.JobStatus{}, err
	}
	if job.State != queue.Done {
		return s.status(ctx, job)
	}
	if job.Result == nil {
		return ipc.JobStatus{ID: id, State: ipc.StateGone}, nil
	}
	resp, err := pdmp.ParseResponse(job.Result)
	if err != nil || resp.Link == "" {
		return ipc.JobStatus{}, refuse(http.StatusConflict, pdmp.IssueNotSupported, "Parameters.parameter[pdmp-history-link]", "the responder's answer has no report link")
	}
	reg, ok := s.Agent().registrations[job.Labels[labelRegistration]]
	if !ok {
		return ipc.JobStatus{}, refuse(http.StatusConflict, pdmp.IssueNotSupported, "", "the job's registration is no longer configured")
	}
	if !sameOrigin(resp.Link, reg.Responder.FHIRBase) {
		return ipc.JobStatus{}, refuse(http.StatusConflict, pdmp.IssueSecurity, "Parameters.parameter[pdmp-history-link].valueUrl",
			fmt.Sprintf("the report is hosted outside the responder's origin; open it directly: %s", resp.Link))
	}
	rep, err := s.Agent().send(ctx, reg, http.MethodGet, resp.Link, nil, job.RequestID)
	if err != nil {
		return ipc.JobStatus{}, refuse(http.StatusBadGateway, pdmp.IssueTransient, "", "fetching the report: "+err.Error())
	}
	if rep.Status != http.StatusOK {
		return ipc.JobStatus{}, refuse(http.StatusBadGateway, pdmp.IssueException, "", fmt.Sprintf("the responder answered HTTP %d for the report", rep.Status))
	}
	return ipc.JobStatus{ID: id, State: ipc.StateDone, HTTPStatus: http.StatusOK, Body: rep.Body, ContentType: rep.ContentType}, nil
}
