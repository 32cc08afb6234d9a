package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// mib: image sizes are whole MiB (ext4 grows in whole blocks; Kubernetes quantities are usually Gi).
const mib = 1 << 20

// driver holds what the three services share: where the images are, the node's name, and one lock
// per volume, so an expansion and a stage of the same volume never interleave.
type driver struct {
	volumes string
	nodeID  string
	locks   keyedLocks
}

type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func (k *keyedLocks) init() { k.locks = map[string]*sync.Mutex{} }

// lock takes the lock of key and returns its unlock.
func (k *keyedLocks) lock(key string) func() {
	k.mu.Lock()
	l, ok := k.locks[key]
	if !ok {
		l = &sync.Mutex{}
		k.locks[key] = l
	}
	k.mu.Unlock()
	l.Lock()
	return l.Unlock
}

var validID = regexp.MustCompile(`^[a-zA-Z0-9][-a-zA-Z0-9_.]{0,127}$`)

// image is the path of a volume's image file, or an error for an id that is no file name.
func (d *driver) image(id string) (string, error) {
	if !validID.MatchString(id) {
		return "", fmt.Errorf("volume id %q is not a file name", id)
	}
	return filepath.Join(d.volumes, id+".img"), nil
}

func roundUp(n int64) int64 {
	if n <= 0 {
		n = mib
	}
	return (n + mib - 1) / mib * mib
}

// run runs a command and returns its output, or an error that quotes it.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// create makes a sparse image of size bytes with an empty ext4 filesystem in it.
func create(image string, size int64) error {
	partial := image + ".partial"
	f, err := os.Create(partial)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// No reserved blocks: the whole volume is the pod's.
	if _, err := run("mkfs.ext4", "-q", "-F", "-m", "0", partial); err != nil {
		os.Remove(partial)
		return err
	}
	return os.Rename(partial, image)
}

func fileSize(path string) (int64, error) {
	info, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return info.Size(), nil
}

// filesystemSize is the size of the ext4 filesystem in image (or on a device), from its superblock.
func filesystemSize(source string) (int64, error) {
	out, err := run("dumpe2fs", "-h", source)
	if err != nil {
		return 0, err
	}
	var blocks, blockSize int64
	for _, line := range strings.Split(out, "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "Block count":
			blocks, _ = strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		case "Block size":
			blockSize, _ = strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		}
	}
	if blocks == 0 || blockSize == 0 {
		return 0, fmt.Errorf("dumpe2fs -h %s: no block count or block size", source)
	}
	return blocks * blockSize, nil
}

// growOffline grows the filesystem in image to fill it; image must not be mounted.
func growOffline(image string) (grown bool, err error) {
	size, err := fileSize(image)
	if err != nil {
		return false, err
	}
	fs, err := filesystemSize(image)
	if err != nil {
		return false, err
	}
	if fs >= size {
		return false, nil
	}
	// resize2fs wants a freshly checked filesystem; exit status 1 means e2fsck corrected something.
	if out, err := run("e2fsck", "-f", "-p", image); err != nil {
		var exit *exec.ExitError
		if !asExit(err, &exit) || exit.ExitCode() > 1 {
			return false, fmt.Errorf("e2fsck before growing: %v (%s)", err, out)
		}
	}
	if _, err := run("resize2fs", image); err != nil {
		return false, err
	}
	return true, nil
}

func asExit(err error, target **exec.ExitError) bool {
	for err != nil {
		if e, ok := err.(*exec.ExitError); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// loopDevice is the loop device image is attached to, or "" when none is.
func loopDevice(image string) (string, error) {
	out, err := run("losetup", "-j", image)
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(out)
	if line == "" {
		return "", nil
	}
	device, _, _ := strings.Cut(line, ":")
	return device, nil
}

// mountSource is what is mounted at path, or "" when path is not a mount point.
func mountSource(path string) (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	clean := filepath.Clean(path)
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 10 || unescape(fields[4]) != clean {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) {
				return fields[i+2], nil
			}
		}
		return "?", nil
	}
	return "", nil
}

// mountPointsOf lists the mount points whose source is device (a staged volume and its bind mounts).
func mountPointsOf(device string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) && fields[i+2] == device && len(fields) > 4 {
				points = append(points, unescape(fields[4]))
			}
		}
	}
	return points, nil
}

func unescape(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// prepareRoot makes a fresh filesystem's root usable by any pod user: mode 0777 instead of mkfs's
// 0755 (a root the kubelet has given the pod's fsGroup keeps its mode) and no empty lost+found
// (databases refuse to initialise a folder that holds anything; e2fsck may make it again).
func prepareRoot(mountPoint string) error {
	info, err := os.Stat(mountPoint)
	if err != nil {
		return err
	}
	if info.Mode().Perm() == 0o755 {
		if err := os.Chmod(mountPoint, 0o777); err != nil {
			return err
		}
	}
	lostFound := filepath.Join(mountPoint, "lost+found")
	entries, err := os.ReadDir(lostFound)
	if err == nil && len(entries) == 0 {
		return os.Remove(lostFound)
	}
	return nil
}
