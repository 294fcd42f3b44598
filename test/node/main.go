// agw-test-node: the kubelet side of a test node. It serves the kubelet's streaming endpoints
// (/exec, /attach, /portForward, /containerLogs) over TLS with the CRI streaming server package
// that kubelets and container runtimes use, so the real kube-apiserver streams to it unmodified.
// Containers are local processes: exec runs the command on this machine, a container's main
// process (its spec's command and args, read from the apiserver) starts on first attach or logs
// request, and port-forward dials the port on loopback. Pods share the machine's filesystem and
// network; it is a test fixture, not a kubelet.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	idleTimeout           = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
)

type node struct {
	dir    string
	api    *http.Client
	apiURL string

	mu         sync.Mutex
	containers map[string]*container
}

func main() {
	listen := flag.String("listen", "127.0.0.1:10250", "address to serve on")
	cert := flag.String("tls-cert", "", "serving certificate")
	key := flag.String("tls-key", "", "serving key")
	clientCA := flag.String("client-ca", "", "CA of the apiserver's kubelet client certificate")
	dir := flag.String("dir", "", "directory for container logs")
	apiURL := flag.String("apiserver", "", "apiserver URL (to read pod specs)")
	apiCA := flag.String("apiserver-ca", "", "CA of the apiserver")
	apiCert := flag.String("apiserver-cert", "", "client certificate for the apiserver")
	apiKey := flag.String("apiserver-key", "", "client key for the apiserver")
	flag.Parse()

	pair, err := tls.LoadX509KeyPair(*apiCert, *apiKey)
	must(err)
	n := &node{dir: *dir, apiURL: *apiURL, containers: map[string]*container{}, api: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(*apiCA), Certificates: []tls.Certificate{pair}}},
	}}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", n.serveExec)
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", n.serveAttach)
	mux.HandleFunc("/portForward/{ns}/{pod}", n.servePortForward)
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", n.serveLogs)

	server := &http.Server{Addr: *listen, Handler: logged(mux), TLSConfig: &tls.Config{
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool(*clientCA),
	}}
	ln, err := net.Listen("tcp", *listen)
	must(err)
	fmt.Println("listening", ln.Addr().String())
	log.Fatal(server.ServeTLS(ln, *cert, *key))
}

func logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s (%s)", r.Method, r.URL.RequestURI(), r.TLS.PeerCertificates[0].Subject.CommonName)
		h.ServeHTTP(w, r)
	})
}

func (n *node) serveExec(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommand.ServeExec(w, r, n, r.PathValue("ns")+"/"+r.PathValue("pod"), "", r.PathValue("container"),
		r.URL.Query()["command"], opts, idleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (n *node) serveAttach(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommand.ServeAttach(w, r, n, r.PathValue("ns")+"/"+r.PathValue("pod"), "", r.PathValue("container"),
		opts, idleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (n *node) servePortForward(w http.ResponseWriter, r *http.Request) {
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, n, r.PathValue("ns")+"/"+r.PathValue("pod"), "", opts,
		idleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

// ExecInContainer runs cmd as a local process.
func (n *node) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if len(cmd) == 0 {
		return errors.New("no command")
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Dir = n.dir
	if tty {
		return runTTY(c, in, out, resize)
	}
	if in != nil {
		c.Stdin = in
	}
	c.Stdout, c.Stderr = out, errw
	return exitError(c.Run())
}

func runTTY(c *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	c.Env = append(os.Environ(), "TERM=xterm")
	// the client's first size, when it comes soon (kubectl sends it as the streams open): a
	// command that reads its terminal size at once (stty size) would otherwise race it
	var size *pty.Winsize
	select {
	case s, ok := <-resize:
		if ok {
			size = &pty.Winsize{Rows: s.Height, Cols: s.Width}
		}
	case <-time.After(time.Second):
	}
	f, err := pty.StartWithSize(c, size)
	if err != nil {
		return err
	}
	defer f.Close()
	go func() {
		for size := range resize {
			pty.Setsize(f, &pty.Winsize{Rows: size.Height, Cols: size.Width})
		}
	}()
	if in != nil {
		go io.Copy(f, in)
	}
	copied := make(chan struct{})
	go func() { io.Copy(out, f); close(copied) }()
	err = c.Wait()
	select { // the rest of the output, then EIO once the terminal's last writer is gone
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	return exitError(err)
}

func exitError(err error) error {
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		return utilexec.CodeExitError{Err: err, Code: exit.ExitCode()}
	}
	return err
}

// PortForward connects the stream to the port on loopback (pods share the machine's network).
func (n *node) PortForward(ctx context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, stream); conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(stream, conn); done <- struct{}{} }()
	<-done
	<-done
	return nil
}

func pool(file string) *x509.CertPool {
	pem, err := os.ReadFile(file)
	must(err)
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		log.Fatalf("%s: no certificate", file)
	}
	return p
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// podSpec reads the pod's container from the apiserver.
func (n *node) podContainer(ns, pod, name string) (command []string, stdin bool, tty bool, err error) {
	res, err := n.api.Get(fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s", n.apiURL, ns, pod))
	if err != nil {
		return nil, false, false, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, false, false, fmt.Errorf("pod %s/%s: %s", ns, pod, res.Status)
	}
	var p struct {
		Spec struct {
			Containers []struct {
				Name    string   `json:"name"`
				Command []string `json:"command"`
				Args    []string `json:"args"`
				Stdin   bool     `json:"stdin"`
				TTY     bool     `json:"tty"`
			} `json:"containers"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
		return nil, false, false, err
	}
	for _, c := range p.Spec.Containers {
		if c.Name == name {
			return append(c.Command, c.Args...), c.Stdin, c.TTY, nil
		}
	}
	return nil, false, false, fmt.Errorf("pod %s/%s has no container %q", ns, pod, name)
}

func logPath(dir, ns, pod, container string) string {
	return filepath.Join(dir, strings.Join([]string{ns, pod, container}, "_")+".log")
}
