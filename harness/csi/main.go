// Command storeops-csi is the CSI driver of the harness's real node: each volume is a sparse ext4
// image file, loop-mounted on the node, that can grow in place.
//
// One process serves the three CSI services (Identity, Controller, Node) on one socket, and the
// kubelet's plugin registration service on <kubelet root>/plugins_registry/<driver>-reg.sock, so no
// node-driver-registrar is needed. external-provisioner and external-resizer talk to the same socket.
//
// Growth: ControllerExpandVolume makes the image file bigger at once. The ext4 filesystem in it grows
// while it is not mounted (e2fsck -f, then resize2fs on the image): right away when no pod uses the
// volume, or else when the volume is next staged, before it is mounted. The node this runs on cannot
// grow a mounted ext4 (that ioctl needs CAP_SYS_RESOURCE), so NodeExpandVolume only reports success
// once the mounted filesystem really fills the image; until then the claim stays
// FileSystemResizePending, and the kubelet's status says what is true.
//
//	storeops-csi --endpoint /run/csi.sock --data-dir /var/lib/storeops-csi --node-id node \
//	  [--registration-dir /var/lib/kubelet/plugins_registry]
package main

import (
	"errors"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// DriverName is the CSI driver's name: the provisioner of its StorageClass and its CSIDriver object.
const DriverName = "csi.storeops.local"

// Version is the driver's vendor version (GetPluginInfo).
const Version = "0.1.0"

func main() {
	endpoint := flag.String("endpoint", "", "unix socket path the CSI services listen on")
	dataDir := flag.String("data-dir", "", "folder that holds the volumes' image files")
	nodeID := flag.String("node-id", "", "the node's name (NodeGetInfo)")
	registrationDir := flag.String("registration-dir", "",
		"the kubelet's plugins_registry folder; empty: do not register with a kubelet")
	flag.Parse()
	if *endpoint == "" || *dataDir == "" || *nodeID == "" {
		log.Fatal("--endpoint, --data-dir and --node-id are required")
	}
	if err := os.MkdirAll(filepath.Join(*dataDir, "volumes"), 0o700); err != nil {
		log.Fatal(err)
	}
	d := &driver{volumes: filepath.Join(*dataDir, "volumes"), nodeID: *nodeID}
	d.locks.init()

	servers := []*grpc.Server{}
	csiServer, err := serve(*endpoint, func(s *grpc.Server) {
		csi.RegisterIdentityServer(s, &identity{})
		csi.RegisterControllerServer(s, &controller{d: d})
		csi.RegisterNodeServer(s, &node{d: d})
	})
	if err != nil {
		log.Fatal(err)
	}
	servers = append(servers, csiServer)
	log.Printf("serving CSI %s %s on %s (volumes in %s)", DriverName, Version, *endpoint, d.volumes)
	if *registrationDir != "" {
		socket := filepath.Join(*registrationDir, DriverName+"-reg.sock")
		regServer, err := serve(socket, func(s *grpc.Server) {
			registration.RegisterRegistrationServer(s, &registrar{endpoint: *endpoint})
		})
		if err != nil {
			log.Fatal(err)
		}
		servers = append(servers, regServer)
		log.Printf("registration service on %s", socket)
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	for _, s := range servers {
		s.GracefulStop()
	}
	log.Print("stopped")
}

// serve listens on a fresh unix socket at path and serves the services register adds.
func serve(path string, register func(*grpc.Server)) (*grpc.Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	listener, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	server := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	register(server)
	go func() {
		if err := server.Serve(listener); err != nil {
			log.Fatalf("serving %s: %v", path, err)
		}
	}()
	return server, nil
}
