// Command tscontrol is the k3sfleet lab's Tailscale control server: tailscale.com's own
// tstest/integration/testcontrol (in memory, one tailnet, allow-all packet filter) with a DERP
// relay and a STUN server, all on the lab's bridge address, for real tailscaled clients.
//
// Usage:
//
//	tscontrol -config /var/lib/k3sfleet-lab/lab1/tscontrol.json -ready .../tscontrol.ready \
//	    -admin .../tscontrol.sock
//
// The config file (JSON, re-read when it changes) holds:
//
//	{"address": "10.123.1.1", "auth_key_sha256": ["<hex>"],
//	 "addresses": {"lab-server-1": "100.64.1.11"}, "tag_owners": {"tag:k3s": ["tag:k3s"]},
//	 "auto_approve_routes": ["10.42.0.0/16"]}
//
// New node keys must register with an auth key whose sha256 is listed (a registered node key
// re-registers without one, as with Tailscale's control server). A node whose hostname is in
// "addresses" gets that tailnet address (Tailscale's admin console lets an admin set a node's
// address the same way; a newer registration of that host replaces the older); any other node
// keeps testcontrol's 100.64.0.<node ID>. "tag_owners" and "auto_approve_routes" are the
// tailnet policy's tagOwners and autoApprovers.routes (read at start; owners of auto-approved
// routes are not modelled): an advertised route inside an auto-approved prefix is enabled as
// soon as the server sees it, and a node's advertised and enabled routes are its primary
// routes. When the servers listen, the ready file gets {"control_url", "derp_port",
// "stun_port"}.
//
// The admin socket (-admin, a unix socket, mode 0600) answers the lab as an administrator,
// shaped like Tailscale's API (tailscale.com v1.102.5 client/tailscale/routes.go), with the
// node's hostname as its device ID:
//
//	GET  /api/v2/device/<hostname>/routes   {"advertisedRoutes": [...], "enabledRoutes": [...]}
//	POST /api/v2/device/<hostname>/routes   {"routes": [...]}: the enabled routes, [] withdraws
//	GET  /lab/auto-approvers                {"routes": [...]}: the policy's autoApprovers.routes
//	POST /lab/auto-approvers                {"routes": [...]}: [] stops auto-approving (enabled
//	                                        routes stay enabled); new prefixes enable what
//	                                        nodes already advertise inside them
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"tailscale.com/derp/derpserver"
	"tailscale.com/net/stunserver"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
)

type config struct {
	Address       string            `json:"address"`
	AuthKeySHA256 []string          `json:"auth_key_sha256"`
	Addresses     map[string]string `json:"addresses"`
	// TagOwners is the tailnet policy's "tagOwners" (read at start): a node gets the tags
	// it advertises at registration when they are listed (testcontrol.Server.TagOwners).
	TagOwners map[string][]string `json:"tag_owners"`
	// AutoApproveRoutes is the policy's "autoApprovers": {"routes": ...} prefixes (read at
	// start; the admin socket changes them).
	AutoApproveRoutes []string `json:"auto_approve_routes"`
}

// labConfig is the config file, re-read when its modification time changes.
type labConfig struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	cur  config
}

func (c *labConfig) get() config {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := os.Stat(c.path)
	if err != nil || st.ModTime().Equal(c.mod) {
		return c.cur
	}
	data, err := os.ReadFile(c.path)
	if err != nil {
		return c.cur
	}
	var next config
	if err := json.Unmarshal(data, &next); err != nil {
		log.Printf("tscontrol: %s: %v (keeping the previous config)", c.path, err)
		return c.cur
	}
	c.cur, c.mod = next, st.ModTime()
	return c.cur
}

func (c *labConfig) validKey(authKey string) bool {
	if authKey == "" {
		return false
	}
	sum := sha256.Sum256([]byte(authKey))
	return slices.Contains(c.get().AuthKeySHA256, hex.EncodeToString(sum[:]))
}

// assignAddress gives the node of nodeKey the address its hostname has in the config (an
// address in 100.64.0.0/16, as the lab's are): as node ID, since testcontrol derives a node's
// own address from its ID.
func assignAddress(control *testcontrol.Server, conf *labConfig, nodeKey key.NodePublic) {
	node := control.Node(nodeKey)
	if node == nil || !node.Hostinfo.Valid() {
		return
	}
	name := node.Hostinfo.Hostname()
	want, err := netip.ParseAddr(conf.get().Addresses[name])
	if err != nil {
		return
	}
	b := want.As4()
	if !want.Is4() || b[0] != 100 || b[1] != 64 || (b[2] == 0 && b[3] == 0) {
		log.Printf("tscontrol: %s: %s is not in 100.64.0.0/16; keeping %v", name, want, node.Addresses)
		return
	}
	if control.AssignNodeID(nodeKey, tailcfg.NodeID(int(b[2])<<8|int(b[3]))) {
		log.Printf("tscontrol: %s (%s) has tailnet address %s", name, nodeKey.ShortString(), want)
	}
}

// routeApprover keeps each node's enabled (approved) routes, as Tailscale's control server keeps
// a device's "enabledRoutes" beside its "advertisedRoutes" (client/tailscale/routes.go), and
// serves the advertised and enabled ones as the node's primary routes: testcontrol serves a
// node's PrimaryRoutes (and its peers' AllowedIPs for them) only as set by SetSubnetRoutes
// (testcontrol.go SetSubnetRoutes, MapResponse, v1.102.5); SetSubnetRoutes(key, nil) takes them
// away and pushes the change to the node and its peers.
type routeApprover struct {
	control *testcontrol.Server
	mu      sync.Mutex
	auto    []netip.Prefix
	enabled map[key.NodePublic][]netip.Prefix
	served  map[key.NodePublic][]netip.Prefix
}

func newRouteApprover(control *testcontrol.Server, auto []string) *routeApprover {
	a := &routeApprover{control: control, enabled: map[key.NodePublic][]netip.Prefix{},
		served: map[key.NodePublic][]netip.Prefix{}}
	for _, s := range auto {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			log.Fatalf("tscontrol: auto_approve_routes: %v", err)
		}
		a.auto = append(a.auto, p.Masked())
	}
	return a
}

// covered reports whether route lies inside one of prefixes.
func covered(route netip.Prefix, prefixes []netip.Prefix) bool {
	return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool {
		return p.Bits() <= route.Bits() && p.Contains(route.Addr())
	})
}

// sync enables the node's advertised routes the policy auto-approves and serves its primary
// routes where they changed.
func (a *routeApprover) sync(nodeKey key.NodePublic) {
	node := a.control.Node(nodeKey)
	if node == nil || !node.Hostinfo.Valid() {
		return
	}
	advertised := node.Hostinfo.RoutableIPs().AsSlice()
	a.mu.Lock()
	defer a.mu.Unlock()
	enabled := a.enabled[nodeKey]
	for _, r := range advertised {
		if covered(r, a.auto) && !slices.Contains(enabled, r) {
			enabled = append(enabled, r)
		}
	}
	a.enabled[nodeKey] = enabled
	var primary []netip.Prefix
	for _, r := range advertised {
		if slices.Contains(enabled, r) {
			primary = append(primary, r)
		}
	}
	if have, ok := a.served[nodeKey]; ok && slices.Equal(have, primary) {
		return
	}
	a.served[nodeKey] = primary
	a.control.SetSubnetRoutes(nodeKey, primary)
}

func (a *routeApprover) syncAll() {
	for _, n := range a.control.AllNodes() {
		a.sync(n.Key)
	}
}

// deviceRoutes is the Tailscale API's answer for a device's routes.
type deviceRoutes struct {
	AdvertisedRoutes []netip.Prefix `json:"advertisedRoutes"`
	EnabledRoutes    []netip.Prefix `json:"enabledRoutes"`
}

// prefixList is the body of a POST: {"routes": [...]}.
type prefixList struct {
	Routes []netip.Prefix `json:"routes"`
}

// readPrefixes decodes a POST's {"routes": [...]}, answering 400 when it cannot.
func readPrefixes(w http.ResponseWriter, r *http.Request) (prefixList, bool) {
	var body prefixList
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return body, false
	}
	return body, true
}

// device answers GET and POST /api/v2/device/<hostname>/routes.
func (a *routeApprover) device(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var keys []key.NodePublic
	for _, n := range a.control.AllNodes() {
		if n.Hostinfo.Valid() && n.Hostinfo.Hostname() == name {
			keys = append(keys, n.Key)
		}
	}
	if len(keys) == 0 {
		http.Error(w, "no device named "+name, http.StatusNotFound)
		return
	}
	if r.Method == http.MethodPost {
		body, ok := readPrefixes(w, r)
		if !ok {
			return
		}
		a.mu.Lock()
		for _, k := range keys {
			a.enabled[k] = body.Routes
		}
		a.mu.Unlock()
		log.Printf("tscontrol: admin: %s enabled routes %v", name, body.Routes)
		for _, k := range keys {
			a.sync(k)
		}
	}
	node := a.control.Node(keys[0])
	a.mu.Lock()
	res := deviceRoutes{AdvertisedRoutes: orEmpty(node.Hostinfo.RoutableIPs().AsSlice()),
		EnabledRoutes: orEmpty(slices.Clone(a.enabled[keys[0]]))}
	a.mu.Unlock()
	writeJSON(w, res)
}

// autoApprovers answers GET and POST /lab/auto-approvers.
func (a *routeApprover) autoApprovers(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		body, ok := readPrefixes(w, r)
		if !ok {
			return
		}
		a.mu.Lock()
		a.auto = nil
		for _, p := range body.Routes {
			a.auto = append(a.auto, p.Masked())
		}
		a.mu.Unlock()
		log.Printf("tscontrol: admin: autoApprovers.routes %v", body.Routes)
		a.syncAll()
	}
	a.mu.Lock()
	res := prefixList{Routes: orEmpty(slices.Clone(a.auto))}
	a.mu.Unlock()
	writeJSON(w, res)
}

// orEmpty is routes, or an empty list (JSON [] rather than null) when there are none.
func orEmpty(routes []netip.Prefix) []netip.Prefix {
	if routes == nil {
		return []netip.Prefix{}
	}
	return routes
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Printf("tscontrol: admin: %v", err)
	}
}

// serveAdmin answers the admin API on the unix socket at path (mode 0600) until ctx ends.
func serveAdmin(ctx context.Context, path string, routes *routeApprover) {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/device/{name}/routes", routes.device)
	mux.HandleFunc("POST /api/v2/device/{name}/routes", routes.device)
	mux.HandleFunc("GET /lab/auto-approvers", routes.autoApprovers)
	mux.HandleFunc("POST /lab/auto-approvers", routes.autoApprovers)
	srv := &http.Server{Handler: mux}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
}

func writeReady(path string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		log.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		log.Fatal(err)
	}
}

func main() {
	configPath := flag.String("config", "", "path of the JSON config file (required)")
	readyPath := flag.String("ready", "", "file to write the control URL and ports to once listening")
	adminPath := flag.String("admin", "", "unix socket for the admin API (routes, auto-approvers)")
	flag.Parse()
	conf := &labConfig{path: *configPath}
	addr := conf.get().Address
	if *configPath == "" || addr == "" {
		log.Fatal("tscontrol: -config with an \"address\" is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// DERP over TLS (self-signed; the DERP map marks the node InsecureForTests, as
	// tstest/integration.RunDERPAndSTUN does) and STUN, on the bridge address.
	derp := derpserver.New(key.NewNode(), log.Printf)
	derpLn, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		log.Fatal(err)
	}
	derpSrv := httptest.NewUnstartedServer(derpserver.Handler(derp))
	derpSrv.Listener.Close()
	derpSrv.Listener = derpLn
	derpSrv.StartTLS()
	stun := stunserver.New(ctx)
	if err := stun.Listen(net.JoinHostPort(addr, "0")); err != nil {
		log.Fatal(err)
	}
	go stun.Serve()
	derpPort := derpLn.Addr().(*net.TCPAddr).Port
	stunPort := stun.LocalAddr().(*net.UDPAddr).Port

	ctlLn, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		log.Fatal(err)
	}
	baseURL := "http://" + ctlLn.Addr().String()
	control := &testcontrol.Server{
		DERPMap: &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {
			RegionID: 1, RegionCode: "lab", RegionName: "k3sfleet lab",
			Nodes: []*tailcfg.DERPNode{{
				Name: "1a", RegionID: 1, HostName: addr, IPv4: addr, IPv6: "none",
				DERPPort: derpPort, STUNPort: stunPort, STUNTestIP: addr, InsecureForTests: true,
			}},
		}}},
		ExplicitBaseURL:  baseURL,
		AllNodesSameUser: true,
		AllOnline:        true,
		TagOwners:        conf.get().TagOwners,
		Logf:             log.Printf,
	}
	control.GateRegister(conf.validKey)
	routes := newRouteApprover(control, conf.get().AutoApproveRoutes)
	control.HoldMapRequest = func(req *tailcfg.MapRequest) func() {
		assignAddress(control, conf, req.NodeKey)
		routes.sync(req.NodeKey)
		// after the request: a map update may have brought new Hostinfo (advertised routes)
		return func() { routes.sync(req.NodeKey) }
	}
	if *adminPath != "" {
		serveAdmin(ctx, *adminPath, routes)
	}
	srv := &http.Server{Handler: control}
	go func() {
		<-ctx.Done()
		srv.Close()
		derpSrv.Close()
		derp.Close()
	}()
	if *readyPath != "" {
		writeReady(*readyPath, map[string]any{"control_url": baseURL, "derp_port": derpPort, "stun_port": stunPort})
	}
	log.Printf("tscontrol: control %s, DERP %s:%d, STUN %s:%d", baseURL, addr, derpPort, addr, stunPort)
	if err := srv.Serve(ctlLn); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
