package ipc

import "golang.org/x/sys/unix"

// readPeerCreds reads LOCAL_PEERCRED (the peer's uid and groups, the
// effective gid first) and LOCAL_PEERPID.
func readPeerCreds(fd int) (peerCreds, error) {
	x, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return peerCreds{}, err
	}
	pid, err := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	if err != nil {
		return peerCreds{}, err
	}
	pc := peerCreds{uid: int(x.Uid), pid: pid}
	for _, g := range x.Groups[:min(int(x.Ngroups), len(x.Groups))] {
		pc.gids = append(pc.gids, int(g))
	}
	return pc, nil
}
