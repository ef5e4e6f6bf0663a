// Command tscontrol is the k3sfleet lab's Tailscale control server: tailscale.com's own
// tstest/integration/testcontrol (in memory, one tailnet, allow-all packet filter) with a DERP
// relay and a STUN server, all on the lab's bridge address, for real tailscaled clients.
//
// Usage:
//
//	tscontrol -config /var/lib/k3sfleet-lab/lab1/tscontrol.json -ready .../tscontrol.ready
//
// The config file (JSON, re-read when it changes) holds:
//
//	{"address": "10.123.1.1", "auth_key_sha256": ["<hex>"],
//	 "addresses": {"lab-server-1": "100.64.1.11"}, "tag_owners": {"tag:k3s": ["tag:k3s"]}}
//
// New node keys must register with an auth key whose sha256 is listed (a registered node key
// re-registers without one, as with Tailscale's control server). A node whose hostname is in
// "addresses" gets that tailnet address (Tailscale's admin console lets an admin set a node's
// address the same way; a newer registration of that host replaces the older); any other node
// keeps testcontrol's 100.64.0.<node ID>. Advertised routes are approved (primary) at once. When the
// servers listen, the ready file gets {"control_url", "derp_port", "stun_port"}.
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

// routeApprover makes the routes a node advertises (Hostinfo.RoutableIPs) its primary routes,
// as a tailnet policy file's "autoApprovers": {"routes": ...} does when it names everyone;
// testcontrol serves a node's PrimaryRoutes only once SetSubnetRoutes was called for it.
type routeApprover struct {
	mu       sync.Mutex
	approved map[key.NodePublic][]netip.Prefix
}

func (a *routeApprover) sync(control *testcontrol.Server, nodeKey key.NodePublic) {
	node := control.Node(nodeKey)
	if node == nil || !node.Hostinfo.Valid() {
		return
	}
	want := node.Hostinfo.RoutableIPs().AsSlice()
	a.mu.Lock()
	defer a.mu.Unlock()
	if have, ok := a.approved[nodeKey]; ok && slices.Equal(have, want) {
		return
	}
	if a.approved == nil {
		a.approved = map[key.NodePublic][]netip.Prefix{}
	}
	a.approved[nodeKey] = want
	control.SetSubnetRoutes(nodeKey, want)
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
	routes := &routeApprover{}
	control.HoldMapRequest = func(req *tailcfg.MapRequest) func() {
		assignAddress(control, conf, req.NodeKey)
		routes.sync(control, req.NodeKey)
		// after the request: a map update may have brought new Hostinfo (advertised routes)
		return func() { routes.sync(control, req.NodeKey) }
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
