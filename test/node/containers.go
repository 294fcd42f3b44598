package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// container is a pod container's main process: its output goes to a log file and to every
// attached client; attached clients' input goes to its stdin when the spec asks for one.
type container struct {
	log    *os.File
	stdin  io.Writer
	pty    *os.File
	exited chan struct{}

	mu   sync.Mutex
	subs map[*attached]struct{}
}

type attached struct {
	out, err io.Writer
	gone     chan struct{}
}

type stream struct {
	c      *container
	stderr bool
}

func (s stream) Write(p []byte) (int, error) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.c.log.Write(p)
	for a := range s.c.subs {
		w := a.out
		if s.stderr && a.err != nil {
			w = a.err
		}
		if _, err := w.Write(p); err != nil {
			delete(s.c.subs, a)
			close(a.gone)
		}
	}
	return len(p), nil
}

// container starts the main process on first use.
func (n *node) container(name, containerName string) (*container, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.containers[name+"/"+containerName]; c != nil {
		return c, nil
	}
	ns, pod, _ := strings.Cut(name, "/")
	command, stdin, tty, err := n.podContainer(ns, pod, containerName)
	if err != nil {
		return nil, err
	}
	if len(command) == 0 {
		return nil, errors.New("the test node needs a command in the container's spec")
	}
	f, err := os.OpenFile(logPath(n.dir, ns, pod, containerName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	c := &container{log: f, exited: make(chan struct{}), subs: map[*attached]struct{}{}}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Dir = n.dir
	if tty {
		cmd.Env = append(os.Environ(), "TERM=xterm")
		if c.pty, err = pty.Start(cmd); err != nil {
			return nil, err
		}
		c.stdin = c.pty
		go io.Copy(stream{c: c}, c.pty)
	} else {
		if stdin {
			if c.stdin, err = cmd.StdinPipe(); err != nil {
				return nil, err
			}
		}
		cmd.Stdout, cmd.Stderr = stream{c: c}, stream{c: c, stderr: true}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
	}
	go func() { cmd.Wait(); close(c.exited) }()
	n.containers[name+"/"+containerName] = c
	return c, nil
}

// AttachContainer relays the main process's output and input until the client goes or it exits.
func (n *node) AttachContainer(ctx context.Context, name, _, containerName string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, err := n.container(name, containerName)
	if err != nil {
		return err
	}
	a := &attached{out: out, err: errw, gone: make(chan struct{})}
	if out == nil {
		a.out = io.Discard
	}
	c.mu.Lock()
	c.subs[a] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.subs, a)
		c.mu.Unlock()
	}()
	if in != nil && c.stdin != nil {
		go io.Copy(c.stdin, in)
	}
	if tty && c.pty != nil {
		go func() {
			for size := range resize {
				pty.Setsize(c.pty, &pty.Winsize{Rows: size.Height, Cols: size.Width})
			}
		}()
	}
	select {
	case <-ctx.Done():
	case <-c.exited:
		time.Sleep(100 * time.Millisecond) // the last output
	case <-a.gone:
	}
	return nil
}

// serveLogs sends the container's log, then follows it until the client goes or the process exits.
func (n *node) serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, name := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	c, err := n.container(ns+"/"+pod, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	f, err := os.Open(logPath(n.dir, ns, pod, name))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain")
	follow := r.URL.Query().Get("follow") == "true"
	flusher := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		k, err := f.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return
			}
			flusher.Flush()
			continue
		}
		if err != nil && err != io.EOF || !follow {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-c.exited:
			if k, _ := f.Read(buf); k > 0 {
				w.Write(buf[:k])
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
