package ipc

import "golang.org/x/sys/unix"

// readPeerCreds reads SO_PEERCRED: the uid, gid and pid of the peer when it
// called connect(2).
func readPeerCreds(fd int) (peerCreds, error) {
	u, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return peerCreds{}, err
	}
	return peerCreds{uid: int(u.Uid), pid: int(u.Pid), gids: []int{int(u.Gid)}}, nil
}
