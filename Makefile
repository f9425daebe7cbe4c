# make test: install the Debian packages the tests need, then run every
# test against real parts (Secret Service, SoftHSM2, sockets, kill -9).
.PHONY: test setup build

test: setup
	.ci/test

setup:
	.ci/setup

build:
	CGO_ENABLED=1 go build -o pdmp-agent ./cmd/pdmp-agent
