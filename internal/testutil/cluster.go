package testutil

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/socketrooms/membership/internal/etcdembed"
)

// Cluster is a multi-member etcd running in the test process, whose members a
// test can stop and restart (same name, data and addresses).
type Cluster struct {
	t       testing.TB
	mu      sync.Mutex
	configs []etcdembed.Config
	members []*etcdembed.Server // nil while stopped
}

// StartCluster starts n members and waits until they serve; all are stopped
// when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, configs: make([]etcdembed.Config, n), members: make([]*etcdembed.Server, n)}
	var peers []string
	// A port freed by FreeAddr may be handed out again at once: take distinct ones.
	used := map[string]bool{}
	distinct := func() string {
		for {
			if a := FreeAddr(t); !used[a] {
				used[a] = true
				return a
			}
		}
	}
	for i := range c.configs {
		c.configs[i] = etcdembed.Config{
			Name:       fmt.Sprintf("m%d", i),
			Dir:        t.TempDir(),
			ClientAddr: distinct(),
			PeerAddr:   distinct(),
			LogLevel:   "panic",
		}
		peers = append(peers, fmt.Sprintf("m%d=http://%s", i, c.configs[i].PeerAddr))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range c.configs {
		c.configs[i].InitialCluster = strings.Join(peers, ",")
		wg.Add(1)
		go func() { // members become ready only together, once a quorum is up
			defer wg.Done()
			c.members[i], errs[i] = etcdembed.Start(c.configs[i])
		}()
	}
	wg.Wait()
	t.Cleanup(c.stopAll)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Endpoints are the client URLs of every member, stopped or not.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, cfg := range c.configs {
		eps = append(eps, "http://"+cfg.ClientAddr)
	}
	return eps
}

// Stop stops member i.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[i]; m != nil {
		m.Close()
		c.members[i] = nil
	}
}

// Restart starts the stopped member i again from its data.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.members[i] != nil {
		return nil
	}
	m, err := etcdembed.Start(c.configs[i])
	if err != nil {
		return err
	}
	c.members[i] = m
	return nil
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}
