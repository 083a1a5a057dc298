// Command vcsim is vmigrate's vCenter simulator for tests: govmomi's vcsim (VPX model) with the
// inventory of the migration lab, disks backed by real VMDK files, and the extensions vmigrate
// needs that vcsim 0.24 lacks (QueryChangedDiskAreas from real file diffs, forced session expiry).
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build -o vcsim .
//
// It prints one JSON line on stdout when ready and serves until stdin closes or SIGTERM.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	datastoreName = "WorkloadDatastore"
	networkName   = "segment-migrating-to-ocpvirt"
	blockSize     = 64 * 1024
)

type diskFlags map[string]string

func (d diskFlags) String() string { return fmt.Sprint(map[string]string(d)) }

func (d diskFlags) Set(v string) error {
	kv := strings.SplitN(v, "=", 2)
	if len(kv) != 2 || kv[0] == "" || kv[1] == "" {
		return fmt.Errorf("want vmname=relative/path.vmdk, got %q", v)
	}
	d[kv[0]] = kv[1]
	return nil
}

// labVM describes one VM of the lab inventory.
type labVM struct {
	name     string
	guestID  string
	guestOS  string
	efi      bool
	cpus     int32
	cores    int32
	memoryMB int64
	mac      string
	ip       string
	running  bool
	cdrom    string
}

func labVMs() []labVM {
	base := []labVM{
		{name: "haproxy", guestID: "rhel8_64Guest", guestOS: "Red Hat Enterprise Linux 8 (64-bit)", cpus: 2, cores: 1, memoryMB: 2048, mac: "00:50:56:01:00:01", ip: "192.168.123.10"},
		{name: "database", guestID: "rhel8_64Guest", guestOS: "Red Hat Enterprise Linux 8 (64-bit)", cpus: 4, cores: 2, memoryMB: 8192, mac: "00:50:56:01:00:02", ip: "192.168.123.11"},
		{name: "winweb01", guestID: "windows2019srv_64Guest", guestOS: "Microsoft Windows Server 2019 (64-bit)", efi: true, cpus: 2, cores: 2, memoryMB: 4096, mac: "00:50:56:01:00:03", ip: "192.168.123.12", cdrom: "iso/windows2019.iso"},
		{name: "winweb02", guestID: "windows2019srv_64Guest", guestOS: "Microsoft Windows Server 2019 (64-bit)", efi: true, cpus: 2, cores: 2, memoryMB: 4096, mac: "00:50:56:01:00:04", ip: "192.168.123.13", cdrom: "iso/windows2019.iso"},
	}
	out := append([]labVM{}, base...)
	for i, vm := range base {
		r := vm
		r.name = vm.name + "_running"
		r.running = true
		r.mac = fmt.Sprintf("00:50:56:01:01:%02x", i+1)
		r.ip = fmt.Sprintf("192.168.123.%d", 20+i)
		out = append(out, r)
	}
	return out
}

// snapState is what vmigrate's extension remembers of one snapshot's disks.
type snapDisk struct {
	changeID string
	raw      string // private copy of the flat extent at snapshot time
	dsFiles  []string
}

// cbt holds the changed-block-tracking state shared by the hook and the SOAP interceptor.
type cbt struct {
	mu       sync.Mutex
	stateDir string
	dsDir    string
	counter  int
	byChange map[string]string                       // changeId -> raw copy
	snaps    map[string]map[int32]*snapDisk          // snapshot moref -> disk key -> state
	diskUUID map[string]string                       // vm moref -> uuid prefix for change ids
}

func (c *cbt) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VmigrateCbtHook", Value: "vmigrate-cbt"}
}

func (c *cbt) UpdateObject(mo.Reference, []types.PropertyChange) {}

func (c *cbt) RemoveObject(ref types.ManagedObjectReference) {
	if ref.Type != "VirtualMachineSnapshot" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.snaps[ref.Value]; ok {
		for _, d := range s {
			for _, f := range d.dsFiles {
				_ = os.Remove(f)
			}
		}
	}
}

// dsPath maps "[ds] a/b.vmdk" to the local file.
func (c *cbt) dsPath(name string) string {
	var p object.DatastorePath
	if !p.FromString(name) {
		return ""
	}
	return filepath.Join(c.dsDir, p.Path)
}

func flatName(p string) string {
	return strings.TrimSuffix(p, ".vmdk") + "-flat.vmdk"
}

// copySparse copies src to dst, skipping all-zero 64 KiB blocks so the copy stays sparse.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	buf := make([]byte, blockSize)
	zero := make([]byte, blockSize)
	var off int64
	for off < st.Size() {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return out.Truncate(st.Size())
}

// PutObject runs inside CreateSnapshot_Task: it freezes the disks' content and assigns change ids.
func (c *cbt) PutObject(item mo.Reference) {
	snap, ok := item.(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	vm, ok := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counter++
	state := map[int32]*snapDisk{}
	devices := make([]types.BaseVirtualDevice, len(vm.Config.Hardware.Device))
	copy(devices, vm.Config.Hardware.Device)
	for i, dev := range devices {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		desc := c.dsPath(backing.FileName)
		if desc == "" {
			continue
		}
		flat := flatName(desc)
		raw := filepath.Join(c.stateDir, fmt.Sprintf("%s-%d-%d.raw", snap.Self.Value, disk.Key, c.counter))
		if err := copySparse(flat, raw); err != nil {
			log.Printf("vmigrate: snapshot copy of %s failed: %s", flat, err)
			continue
		}
		sd := &snapDisk{raw: raw}
		// A datastore-visible copy (descriptor + flat) so the snapshot's disk reads as it was.
		snapDesc := strings.TrimSuffix(desc, ".vmdk") + fmt.Sprintf("-snap%d.vmdk", c.counter)
		snapFlat := flatName(snapDesc)
		if text, err := ioutil.ReadFile(desc); err == nil {
			text = bytes.Replace(text, []byte(filepath.Base(flat)), []byte(filepath.Base(snapFlat)), -1)
			_ = ioutil.WriteFile(snapDesc, text, 0644)
			_ = copySparse(raw, snapFlat)
			sd.dsFiles = []string{snapDesc, snapFlat}
		}
		diskCopy := *disk
		backingCopy := *backing
		if rel, err := filepath.Rel(c.dsDir, snapDesc); err == nil {
			backingCopy.FileName = fmt.Sprintf("[%s] %s", datastoreName, filepath.ToSlash(rel))
		}
		if vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled {
			id := fmt.Sprintf("52 %s 00 00 00 00 00 00-00 00 00 00 00 00 %02x %02x/%d", strings.Replace(vm.Config.Uuid, "-", " ", -1)[:23], disk.Key%256, c.counter%256, c.counter)
			sd.changeID = id
			c.byChange[id] = raw
			backing.ChangeId = id // the VM's current disk moves on to this change id
			backingCopy.ChangeId = id
		}
		diskCopy.Backing = &backingCopy
		devices[i] = &diskCopy
		state[disk.Key] = sd
	}
	c.snaps[snap.Self.Value] = state
	cfg := snap.Config
	hw := cfg.Hardware
	hw.Device = devices
	cfg.Hardware = hw
	snap.Config = cfg
}

type moRef struct {
	Type  string `xml:"type,attr"`
	Value string `xml:",chardata"`
}

type qcdaEnvelope struct {
	Body struct {
		Req *struct {
			This        moRef  `xml:"_this"`
			Snapshot    *moRef `xml:"snapshot"`
			DeviceKey   int32  `xml:"deviceKey"`
			StartOffset int64  `xml:"startOffset"`
			ChangeID    string `xml:"changeId"`
		} `xml:"QueryChangedDiskAreas"`
	} `xml:"Body"`
}

func soapFault(w http.ResponseWriter, faultType, msg string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	var esc bytes.Buffer
	_ = xml.EscapeText(&esc, []byte(msg))
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail><%sFault xmlns="urn:vim25" xsi:type="%s"></%sFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`,
		esc.String(), faultType, faultType, faultType)
}

type area struct{ start, length int64 }

// blocks compares a (may be "" = all zero) and b in 64 KiB blocks from start and returns the
// blocks of b that differ (a == "": that are non-zero).
func blocks(a, b string, start int64) ([]area, int64, error) {
	fb, err := os.Open(b)
	if err != nil {
		return nil, 0, err
	}
	defer fb.Close()
	st, err := fb.Stat()
	if err != nil {
		return nil, 0, err
	}
	var fa *os.File
	if a != "" {
		if fa, err = os.Open(a); err != nil {
			return nil, 0, err
		}
		defer fa.Close()
	}
	size := st.Size()
	start = start / blockSize * blockSize
	bufA := make([]byte, blockSize)
	bufB := make([]byte, blockSize)
	var out []area
	for off := start; off < size; off += blockSize {
		n, _ := fb.ReadAt(bufB, off)
		for i := range bufA {
			bufA[i] = 0
		}
		if fa != nil {
			_, _ = fa.ReadAt(bufA[:n], off)
		}
		if !bytes.Equal(bufA[:n], bufB[:n]) {
			if len(out) > 0 && out[len(out)-1].start+out[len(out)-1].length == off {
				out[len(out)-1].length += int64(n)
			} else {
				out = append(out, area{off, int64(n)})
			}
		}
	}
	return out, size, nil
}

// queryChangedDiskAreas answers the SOAP method vcsim 0.24 does not implement.
func (c *cbt) queryChangedDiskAreas(w http.ResponseWriter, body []byte) {
	var env qcdaEnvelope
	if err := xml.Unmarshal(body, &env); err != nil || env.Body.Req == nil {
		soapFault(w, "InvalidRequest", "cannot parse QueryChangedDiskAreas")
		return
	}
	req := env.Body.Req
	vmRef := types.ManagedObjectReference{Type: "VirtualMachine", Value: req.This.Value}
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		soapFault(w, "ManagedObjectNotFound", "managed object not found: "+req.This.Value)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var current string // content the query is about
	if req.Snapshot != nil {
		s, ok := c.snaps[req.Snapshot.Value]
		if !ok {
			soapFault(w, "ManagedObjectNotFound", "snapshot not found: "+req.Snapshot.Value)
			return
		}
		d, ok := s[req.DeviceKey]
		if !ok {
			soapFault(w, "InvalidArgument", fmt.Sprintf("no disk with key %d", req.DeviceKey))
			return
		}
		current = d.raw
	} else {
		for _, dev := range vm.Config.Hardware.Device {
			if disk, ok := dev.(*types.VirtualDisk); ok && disk.Key == req.DeviceKey {
				if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
					current = flatName(c.dsPath(b.FileName))
				}
			}
		}
		if current == "" {
			soapFault(w, "InvalidArgument", fmt.Sprintf("no disk with key %d", req.DeviceKey))
			return
		}
	}
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		soapFault(w, "FileFault", "change tracking is not enabled on this virtual machine")
		return
	}
	base := ""
	if req.ChangeID != "*" {
		b, ok := c.byChange[req.ChangeID]
		if !ok {
			soapFault(w, "InvalidArgument", "unknown changeId "+req.ChangeID)
			return
		}
		base = b
	}
	areas, size, err := blocks(base, current, req.StartOffset)
	if err != nil {
		soapFault(w, "FileFault", err.Error())
		return
	}
	var out bytes.Buffer
	start := req.StartOffset / blockSize * blockSize
	if start > size {
		start = size
	}
	fmt.Fprintf(&out, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval><startOffset>%d</startOffset><length>%d</length>`, start, size-start)
	for _, a := range areas {
		fmt.Fprintf(&out, `<changedArea><start>%d</start><length>%d</length></changedArea>`, a.start, a.length)
	}
	out.WriteString(`</returnval></QueryChangedDiskAreasResponse></soapenv:Body></soapenv:Envelope>`)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	_, _ = w.Write(out.Bytes())
}

// makeCert creates a CA and a leaf certificate for 127.0.0.1 / localhost.
func makeCert() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vmigrate vcsim test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}, caPEM, nil
}

func thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func must(err error, what string) {
	if err != nil {
		log.Fatalf("vcsim: %s: %s", what, err)
	}
}

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: a free one)")
	dsDir := flag.String("datastore-dir", "", "directory backing the WorkloadDatastore datastore")
	username := flag.String("username", "administrator@vsphere.local", "login user")
	password := flag.String("password", "VMware1!", "login password")
	extra := flag.Int("vms", 0, "number of extra generated VMs (for benchmarks)")
	disks := diskFlags{}
	flag.Var(disks, "disk", "vmname=relative/path.vmdk[@capacity]: backing VMDK for a lab VM (repeatable); without @capacity the disk is monolithicFlat and sized by its -flat file")
	flag.Parse()
	log.SetOutput(os.Stderr)
	if *dsDir == "" {
		log.Fatal("vcsim: -datastore-dir is required")
	}
	abs, err := filepath.Abs(*dsDir)
	must(err, "datastore dir")
	*dsDir = abs

	model := simulator.VPX()
	model.Datacenter = 1
	model.Cluster = 1
	model.ClusterHost = 2
	model.Host = 0
	model.Datastore = 0
	model.Machine = 0
	model.Portgroup = 1
	model.Autostart = false
	must(model.Create(), "create model")
	defer model.Remove()

	cert, caPEM, err := makeCert()
	must(err, "certificate")
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	model.Service.Listen = &url.URL{Host: fmt.Sprintf("127.0.0.1:%d", *port), User: url.UserPassword(*username, *password)}
	srv := model.Service.NewServer()
	defer srv.Close()

	stateDir, err := ioutil.TempDir("", "vmigrate-vcsim-cbt-")
	must(err, "state dir")
	defer os.RemoveAll(stateDir)
	hook := &cbt{stateDir: stateDir, dsDir: *dsDir, byChange: map[string]string{}, snaps: map[string]map[int32]*snapDisk{}}
	simulator.Map.AddHandler(hook)

	ctx := context.Background()
	u := *srv.URL
	u.User = url.UserPassword(*username, *password)
	admin, err := govmomi.NewClient(ctx, &u, true)
	must(err, "admin login")

	// The interceptor in front of vcsim's handler.
	orig := srv.Server.Config.Handler
	srv.Server.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/vmigrate/expire-sessions":
			n, err := expireSessions(r.Context(), admin)
			forgetLiveSessions()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "%d\n", n)
			return
		case r.URL.Path == "/vmigrate/sessions":
			// Client sessions alive (the simulator's own admin session not counted): how the
			// tests see that every front end logs out.
			n, err := clientSessions(r.Context(), admin)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "%d\n", n)
			return
		case r.URL.Path == "/vmigrate/destroy":
			if err := destroyVM(r.Context(), admin, r.URL.Query().Get("vm")); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
			return
		case strings.HasPrefix(r.URL.Path, "/folder/") && !needsSession(r):
			// vCenter answers datastore requests of an expired session with 401.
			http.Error(w, "session is not authenticated", http.StatusUnauthorized)
			return
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/sdk"):
			body, err := ioutil.ReadAll(io.LimitReader(r.Body, 64<<20))
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if bytes.Contains(body, []byte("QueryChangedDiskAreas")) && !needsSession(r) {
				soapFault(w, "NotAuthenticated", "session is not authenticated")
				return
			}
			if bytes.Contains(body, []byte("<QueryChangedDiskAreas")) {
				hook.queryChangedDiskAreas(w, body)
				return
			}
			r.Body = ioutil.NopCloser(bytes.NewReader(body))
		}
		orig.ServeHTTP(w, r)
	})
	sessionCheck = func(r *http.Request) bool { return hasLiveSession(ctx, admin, r) }

	must(buildInventory(ctx, admin, *dsDir, disks, *extra), "build inventory")

	public := *srv.URL
	public.User = nil
	out, _ := json.Marshal(map[string]string{
		"url":               public.String(),
		"thumbprint_sha256": thumbprint(cert.Certificate[0]),
		"ca_pem":            string(caPEM),
		"username":          *username,
		"password":          *password,
		"datastore_dir":     *dsDir,
		"datastore":         datastoreName,
		"datacenter":        "DC0",
		"network":           networkName,
	})
	fmt.Println(string(out))
	_ = os.Stdout.Sync()

	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(ioutil.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-done:
	case <-sig:
	}
}

var sessionCheck func(*http.Request) bool

func needsSession(r *http.Request) bool {
	if sessionCheck == nil {
		return true
	}
	return sessionCheck(r)
}

// hasLiveSession tells whether the request's session cookie names a live session.
func hasLiveSession(ctx context.Context, admin *govmomi.Client, r *http.Request) bool {
	c, err := r.Cookie("vmware_soap_session")
	if err != nil {
		return false
	}
	// Datastore reads come in thousands; a session seen alive within the last second is not
	// asked about again (expire-sessions clears this), as vCenter's own session cache does.
	live.Lock()
	defer live.Unlock()
	if t, ok := live.seen[c.Value]; ok && time.Since(t) < time.Second {
		return true
	}
	for _, s := range sessionList(ctx, admin) {
		if s.Key == c.Value {
			live.seen[c.Value] = time.Now()
			return true
		}
	}
	return false
}

var live = struct {
	sync.Mutex
	seen map[string]time.Time
}{seen: map[string]time.Time{}}

func forgetLiveSessions() {
	live.Lock()
	live.seen = map[string]time.Time{}
	live.Unlock()
}

func sessionList(ctx context.Context, admin *govmomi.Client) []types.UserSession {
	var sm mo.SessionManager
	pc := property.DefaultCollector(admin.Client)
	if err := pc.RetrieveOne(ctx, *admin.ServiceContent.SessionManager, []string{"sessionList"}, &sm); err != nil {
		return nil
	}
	return sm.SessionList
}

// clientSessions counts the live sessions other than the simulator's own admin session.
func clientSessions(ctx context.Context, admin *govmomi.Client) (int, error) {
	self, err := admin.SessionManager.UserSession(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range sessionList(ctx, admin) {
		if self == nil || s.Key != self.Key {
			n++
		}
	}
	return n, nil
}

// expireSessions terminates every session but the simulator's own admin session, as a vCenter
// does when sessions time out.
func expireSessions(ctx context.Context, admin *govmomi.Client) (int, error) {
	self, err := admin.SessionManager.UserSession(ctx)
	if err != nil {
		return 0, err
	}
	var ids []string
	for _, s := range sessionList(ctx, admin) {
		if self == nil || s.Key != self.Key {
			ids = append(ids, s.Key)
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	return len(ids), admin.SessionManager.TerminateSession(ctx, ids)
}

func destroyVM(ctx context.Context, admin *govmomi.Client, name string) error {
	finder := find.NewFinder(admin.Client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	vm, err := finder.VirtualMachine(ctx, name)
	if err != nil {
		return err
	}
	task, err := vm.Destroy(ctx)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

func buildInventory(ctx context.Context, c *govmomi.Client, dsDir string, disks diskFlags, extra int) error {
	finder := find.NewFinder(c.Client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	hosts, err := finder.HostSystemList(ctx, "*/*")
	if err != nil {
		return err
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].InventoryPath < hosts[j].InventoryPath })
	host := hosts[0]
	pool, err := host.ResourcePool(ctx)
	if err != nil {
		return err
	}
	dss, err := host.ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		return err
	}
	if _, err := dss.CreateLocalDatastore(ctx, datastoreName, dsDir); err != nil {
		return fmt.Errorf("create datastore: %w", err)
	}
	dvsObj, err := finder.Network(ctx, "DVS0")
	if err != nil {
		return fmt.Errorf("find DVS0: %w", err)
	}
	dvs := dvsObj.(*object.DistributedVirtualSwitch)
	task, err := dvs.AddPortgroup(ctx, []types.DVPortgroupConfigSpec{{Name: networkName, Type: "earlyBinding", NumPorts: 128}})
	if err != nil {
		return err
	}
	if err := task.Wait(ctx); err != nil {
		return err
	}
	netObj, err := finder.Network(ctx, networkName)
	if err != nil {
		return err
	}
	nicBacking, err := netObj.EthernetCardBackingInfo(ctx)
	if err != nil {
		return err
	}

	for _, v := range labVMs() {
		rel, ok := disks[v.name]
		var capacity int64
		if at := strings.LastIndex(rel, "@"); ok && at > 0 {
			if _, err := fmt.Sscanf(rel[at+1:], "%d", &capacity); err != nil {
				return fmt.Errorf("disk of %s: bad capacity %q", v.name, rel[at+1:])
			}
			rel = rel[:at]
		} else if ok {
			st, err := os.Stat(flatName(filepath.Join(dsDir, rel)))
			if err != nil {
				return fmt.Errorf("disk of %s: %w", v.name, err)
			}
			capacity = st.Size()
		}
		// vcsim insists that a disk's "-flat.vmdk" exists; a sparse disk has none, so a
		// placeholder stands in while the VM is created and is removed right after.
		placeholder := ""
		if ok {
			flat := flatName(filepath.Join(dsDir, rel))
			if _, err := os.Stat(flat); os.IsNotExist(err) {
				if err := ioutil.WriteFile(flat, nil, 0644); err != nil {
					return err
				}
				placeholder = flat
			}
		}
		spec := vmSpec(v.name, v.guestID, v.efi, v.cpus, v.cores, v.memoryMB, v.mac, nicBacking, rel, capacity, v.cdrom)
		ref, err := createVM(ctx, folders.VmFolder, pool, host, spec)
		if placeholder != "" {
			_ = os.Remove(placeholder)
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", v.name, err)
		}
		vm := object.NewVirtualMachine(c.Client, ref)
		if v.running {
			t, err := vm.PowerOn(ctx)
			if err != nil {
				return err
			}
			if err := t.Wait(ctx); err != nil {
				return err
			}
		}
		setGuest(ref, v)
	}

	type job struct{ i int }
	jobs := make(chan job)
	errs := make(chan error, extra+1)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				name := fmt.Sprintf("gen-vm-%04d", j.i)
				mac := fmt.Sprintf("00:50:56:02:%02x:%02x", j.i/256, j.i%256)
				spec := vmSpec(name, "rhel8_64Guest", false, 2, 1, 2048, mac, nicBacking, "", 0, "")
				if _, err := createVM(ctx, folders.VmFolder, pool, host, spec); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < extra; i++ {
		jobs <- job{i}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return nil
}

func createVM(ctx context.Context, folder *object.Folder, pool *object.ResourcePool, host *object.HostSystem, spec types.VirtualMachineConfigSpec) (types.ManagedObjectReference, error) {
	task, err := folder.CreateVM(ctx, spec, pool, host)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	return info.Result.(types.ManagedObjectReference), nil
}

func vmSpec(name, guestID string, efi bool, cpus, cores int32, memMB int64, mac string, nicBacking types.BaseVirtualDeviceBackingInfo, diskRel string, capacity int64, cdrom string) types.VirtualMachineConfigSpec {
	spec := types.VirtualMachineConfigSpec{
		Name:              name,
		GuestId:           guestID,
		NumCPUs:           cpus,
		NumCoresPerSocket: cores,
		MemoryMB:          memMB,
		Files:             &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s] %s/%s.vmx", datastoreName, name, name)},
	}
	if efi {
		spec.Firmware = string(types.GuestOsDescriptorFirmwareTypeEfi)
		spec.BootOptions = &types.VirtualMachineBootOptions{EfiSecureBootEnabled: types.NewBool(true)}
	} else {
		spec.Firmware = string(types.GuestOsDescriptorFirmwareTypeBios)
	}
	add := types.VirtualDeviceConfigSpecOperationAdd
	scsi := &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
		SharedBus: types.VirtualSCSISharingNoSharing,
		VirtualController: types.VirtualController{
			BusNumber:     0,
			VirtualDevice: types.VirtualDevice{Key: 1000},
		},
	}}
	spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: add, Device: scsi})
	if diskRel != "" {
		unit := int32(0)
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           2000,
				ControllerKey: 1000,
				UnitNumber:    &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: fmt.Sprintf("[%s] %s", datastoreName, diskRel)},
					DiskMode:                     string(types.VirtualDiskModePersistent),
					ThinProvisioned:              types.NewBool(true),
				},
			},
			CapacityInKB: capacity / 1024,
		}
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: add, Device: disk})
	}
	nic := &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: types.VirtualEthernetCard{
		VirtualDevice: types.VirtualDevice{
			Key:         4000,
			Backing:     nicBacking,
			Connectable: &types.VirtualDeviceConnectInfo{StartConnected: true, Connected: true, AllowGuestControl: true},
		},
		AddressType: string(types.VirtualEthernetCardMacTypeManual),
		MacAddress:  mac,
	}}}
	spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: add, Device: nic})
	if cdrom != "" {
		ide := &types.VirtualIDEController{VirtualController: types.VirtualController{BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: 200}}}
		unit := int32(0)
		cd := &types.VirtualCdrom{VirtualDevice: types.VirtualDevice{
			Key:           3000,
			ControllerKey: 200,
			UnitNumber:    &unit,
			Backing: &types.VirtualCdromIsoBackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
				FileName: fmt.Sprintf("[%s] %s", datastoreName, cdrom),
			}},
			Connectable: &types.VirtualDeviceConnectInfo{StartConnected: true, Connected: false},
		}}
		spec.DeviceChange = append(spec.DeviceChange,
			&types.VirtualDeviceConfigSpec{Operation: add, Device: ide},
			&types.VirtualDeviceConfigSpec{Operation: add, Device: cd})
	}
	return spec
}

// setGuest fills the guest info VMware Tools would report.
func setGuest(ref types.ManagedObjectReference, v labVM) {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	simulator.Map.WithLock(vm, func() {
		vm.Guest.GuestId = v.guestID
		vm.Guest.GuestFullName = v.guestOS
		if !v.running {
			vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)
			vm.Guest.Net = nil
			return
		}
		vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
		vm.Guest.IpAddress = v.ip
		vm.Guest.HostName = v.name
		vm.Guest.Net = []types.GuestNicInfo{{
			Network:        networkName,
			IpAddress:      []string{v.ip, "fe80::250:56ff:fe01:" + v.mac[len(v.mac)-2:]},
			MacAddress:     v.mac,
			Connected:      true,
			DeviceConfigId: 4000,
		}}
	})
}
