package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Broadcast ordering (a Broadcast reads its targets at a revision a gateway's
// watch has reached) and WAIT_FOR_APPLY both rely on etcd's watch progress
// notifications. Older etcd servers get them wrong:
//
//   - etcd-io/etcd#15237: a requested progress notification could race ahead
//     of events still queued on the stream. Backports: #15695 (release-3.5,
//     v3.5.8); in v3.6.0 from main.
//   - etcd-io/etcd#17557: a new watch got no progress notification until its
//     first event. Backports: #17566 (release-3.5, v3.5.13); in v3.6.0 from main.
//   - etcd-io/etcd#20229: a watch from a future revision could be sent a
//     progress notification, and then older events. Backports: #20245
//     (release-3.5, v3.5.22) and #20241 (release-3.6, v3.6.2); the changelogs
//     list them with the follow-up #20281 (backports #20290 and #20286, same
//     releases) as "Watch on future revision returns old events or
//     notifications".
//
// So the first releases carrying all three are v3.5.22 and v3.6.2. 3.7 was
// released from main, where v3.7.0-alpha.0 predates #20229 (v3.7.0-beta.0 is
// the first 3.7 tag with it): 3.7.0 pre-releases are refused, releases from
// 3.7.0 on accepted. 3.4 and older are refused.
var minEtcdPatch = map[[2]int]int{
	{3, 5}: 22,
	{3, 6}: 2,
	{3, 7}: 0,
}

// etcdVersionWhy is the reason given when a server is refused.
const etcdVersionWhy = "broadcast ordering and WAIT_FOR_APPLY rely on watch progress notifications, " +
	"which older etcd servers send out of order or not at all (etcd-io/etcd#15237, #17557, #20229)"

// ErrEtcdVersion reports an etcd server too old (or whose version cannot be
// read) for this service.
var ErrEtcdVersion = errors.New("unsupported etcd server version")

// CheckEtcdServerVersion refuses etcd server versions older than the first
// release of their minor series with the watch fixes above: 3.5.22 for 3.5,
// 3.6.2 for 3.6, 3.7.0 for 3.7; 3.4 and older are refused, 3.8 and later
// accepted. A version that does not parse as major.minor.patch[-pre][+build]
// is refused too: nothing says it has the fixes. A pre-release sorts before
// its release (3.6.2-rc.0 and 3.7.0-alpha.0 are refused).
func CheckEtcdServerVersion(v string) error {
	major, minor, patch, pre, ok := parseVersion(v)
	if !ok {
		return fmt.Errorf("%w: etcd server reports version %q, which is not major.minor.patch; need 3.5.22+, 3.6.2+ or 3.7.0+, since %s", ErrEtcdVersion, v, etcdVersionWhy)
	}
	if major > 3 || major == 3 && minor > 7 {
		return nil
	}
	min, known := minEtcdPatch[[2]int{major, minor}]
	if !known {
		return fmt.Errorf("%w: etcd server version %s is not supported (need 3.5.22+, 3.6.2+ or 3.7.0+), since %s", ErrEtcdVersion, v, etcdVersionWhy)
	}
	if patch > min || patch == min && !pre {
		return nil
	}
	return fmt.Errorf("%w: etcd server version %s is older than %d.%d.%d, the first %d.%d release with the needed fixes, since %s",
		ErrEtcdVersion, v, major, minor, min, major, minor, etcdVersionWhy)
}

// parseVersion reads "major.minor.patch" with an optional "-pre-release" and
// "+build" (semantic versioning, as etcd reports its version).
func parseVersion(v string) (major, minor, patch int, pre, ok bool) {
	core, _, _ := strings.Cut(v, "+")
	core, preRelease, hasPre := strings.Cut(core, "-")
	if hasPre && preRelease == "" {
		return 0, 0, 0, false, false
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return 0, 0, 0, false, false
	}
	var n [3]int
	for i, p := range parts {
		if p == "" || len(p) > 9 || len(p) > 1 && p[0] == '0' || strings.Trim(p, "0123456789") != "" {
			return 0, 0, 0, false, false
		}
		n[i], _ = strconv.Atoi(p) // at most 9 digits: fits
	}
	return n[0], n[1], n[2], hasPre, true
}

// etcdStatusTimeout bounds one endpoint's Status call.
const etcdStatusTimeout = 5 * time.Second

// CheckEtcdVersion asks every endpoint of cli for its status at start and
// returns an error wrapping ErrEtcdVersion if any member that answers runs
// an etcd older than CheckEtcdServerVersion allows. Members that do not
// answer are logged and skipped (the check cannot see them, and a rolling
// restart must not keep every replica from starting), but at least one must
// answer: until then it retries each second, up to wait in all. The check
// runs at start only; an etcd member replaced later by an older one is not
// seen.
//
// skip (--etcd-skip-version-check) turns the check off, with a warning: for
// an etcd build that carries the fixes under an older or non-standard
// version (a vendor's backports), which only its operator can know.
func CheckEtcdVersion(ctx context.Context, cli *clientv3.Client, skip bool, wait time.Duration, log *slog.Logger) error {
	if skip {
		log.Warn("etcd server version not checked (--etcd-skip-version-check); etcd older than 3.5.22 or 3.6.2 can deliver broadcasts out of order", "why", etcdVersionWhy)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	eps := cli.Endpoints()
	for {
		// All endpoints at once: a member that is down costs the start one
		// timeout, not one each.
		versions := make([]string, len(eps))
		errs := make([]error, len(eps))
		var wg sync.WaitGroup
		for i, ep := range eps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				callCtx, callCancel := context.WithTimeout(ctx, etcdStatusTimeout)
				defer callCancel()
				st, err := cli.Status(callCtx, ep)
				if err != nil {
					errs[i] = fmt.Errorf("%s: %w", ep, err)
					return
				}
				versions[i] = st.Version
			}()
		}
		wg.Wait()
		answered := 0
		for i, ep := range eps {
			if errs[i] != nil {
				continue
			}
			answered++
			if err := CheckEtcdServerVersion(versions[i]); err != nil {
				return fmt.Errorf("etcd endpoint %s: %w", ep, err)
			}
			log.Debug("etcd server version", "endpoint", ep, "version", versions[i])
		}
		if answered > 0 {
			for _, err := range errs {
				if err != nil {
					log.Warn("etcd endpoint did not answer the version check; not checked", "err", err)
				}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd version check: no endpoint answered within %v: %w", wait, errors.Join(errs...))
		case <-time.After(time.Second):
		}
	}
}

// EtcdVersionCheckWait is how long a binary waits at start for an etcd
// endpoint to answer the version check.
const EtcdVersionCheckWait = 30 * time.Second

// AddEtcdVersionCheckFlag defines --etcd-skip-version-check, the same on both
// binaries.
func AddEtcdVersionCheckFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("etcd-skip-version-check", false,
		"start without checking that etcd is 3.5.22+, 3.6.2+ or 3.7.0+ (only for an etcd build known to carry the watch fixes of etcd-io/etcd#15237, #17557 and #20229 under another version)")
}
