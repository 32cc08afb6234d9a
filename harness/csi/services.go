package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// logCalls logs each call with its method, how long it took and its error.
func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	began := time.Now()
	resp, err := handler(ctx, req)
	if err != nil {
		log.Printf("%s (%s): %v", info.FullMethod, time.Since(began).Round(time.Millisecond), err)
	} else if info.FullMethod != "/csi.v1.Identity/Probe" {
		log.Printf("%s (%s): ok", info.FullMethod, time.Since(began).Round(time.Millisecond))
	}
	return resp, err
}

// --- kubelet plugin registration ------------------------------------------------------------------

type registrar struct {
	registration.UnimplementedRegistrationServer
	endpoint string
}

func (r *registrar) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{
		Type: registration.CSIPlugin, Name: DriverName, Endpoint: r.endpoint, SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(
	_ context.Context, s *registration.RegistrationStatus,
) (*registration.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		log.Print("registered with the kubelet")
	} else {
		log.Printf("the kubelet refused the registration: %s", s.Error)
	}
	return &registration.RegistrationStatusResponse{}, nil
}

// --- identity -------------------------------------------------------------------------------------

type identity struct {
	csi.UnimplementedIdentityServer
}

func (identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: DriverName, VendorVersion: Version}, nil
}

func (identity) GetPluginCapabilities(
	context.Context, *csi.GetPluginCapabilitiesRequest,
) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
			Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}},
		// ONLINE: a volume may be expanded while a pod uses it (its filesystem then grows at the next
		// stage; see the package comment).
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{
			Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}}, nil
}

func (identity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// --- controller -----------------------------------------------------------------------------------

type controller struct {
	csi.UnimplementedControllerServer
	d *driver
}

func controllerCapability(t csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
	return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
		Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}}
}

func (c *controller) ControllerGetCapabilities(
	context.Context, *csi.ControllerGetCapabilitiesRequest,
) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{
		controllerCapability(csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME),
		controllerCapability(csi.ControllerServiceCapability_RPC_EXPAND_VOLUME),
	}}, nil
}

// checkCapabilities accepts single-node filesystem volumes only.
func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return status.Error(codes.InvalidArgument, "no volume capabilities")
	}
	for _, c := range caps {
		if c.GetBlock() != nil {
			return status.Error(codes.InvalidArgument, "block volumes are not supported")
		}
		if fs := c.GetMount().GetFsType(); fs != "" && fs != "ext4" {
			return status.Errorf(codes.InvalidArgument, "filesystem %q is not supported (ext4 only)", fs)
		}
		switch c.GetAccessMode().GetMode() {
		case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		default:
			return status.Errorf(codes.InvalidArgument, "access mode %v is not supported (one node only)",
				c.GetAccessMode().GetMode())
		}
	}
	return nil
}

func (c *controller) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "no volume name")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "volumes from snapshots or clones are not supported")
	}
	image, err := c.d.image(req.GetName())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	size := roundUp(req.GetCapacityRange().GetRequiredBytes())
	if limit := req.GetCapacityRange().GetLimitBytes(); limit > 0 && size > limit {
		return nil, status.Errorf(codes.OutOfRange, "%d bytes in whole MiB exceed the limit of %d", size, limit)
	}
	defer c.d.locks.lock(req.GetName())()
	if existing, err := fileSize(image); err == nil {
		// The same name again: the same volume, if it is the same size.
		if existing < size {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists with %d bytes", req.GetName(), existing)
		}
		size = existing
	} else if err := create(image, size); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: req.GetName(), CapacityBytes: size}}, nil
}

func (c *controller) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	image, err := c.d.image(req.GetVolumeId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	defer c.d.locks.lock(req.GetVolumeId())()
	if device, err := loopDevice(image); err != nil || device != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still attached (%s %v)", req.GetVolumeId(), device, err)
	}
	if err := os.Remove(image); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (c *controller) ValidateVolumeCapabilities(
	_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest,
) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	image, err := c.d.image(req.GetVolumeId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := os.Stat(image); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", req.GetVolumeId(), err)
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeCapabilities: req.GetVolumeCapabilities()}}, nil
}

// ControllerExpandVolume makes the image file bigger. A volume no pod uses gets its filesystem grown
// here too; one that is staged needs the node's part (NodeExpandVolume), which waits for the next stage.
func (c *controller) ControllerExpandVolume(
	_ context.Context, req *csi.ControllerExpandVolumeRequest,
) (*csi.ControllerExpandVolumeResponse, error) {
	image, err := c.d.image(req.GetVolumeId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	size := roundUp(req.GetCapacityRange().GetRequiredBytes())
	defer c.d.locks.lock(req.GetVolumeId())()
	current, err := fileSize(image)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", req.GetVolumeId(), err)
	}
	if size > current {
		if err := os.Truncate(image, size); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		log.Printf("volume %s: image %d -> %d bytes", req.GetVolumeId(), current, size)
	} else {
		size = current
	}
	device, err := loopDevice(image)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if device != "" {
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: true}, nil
	}
	if grown, err := growOffline(image); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if grown {
		log.Printf("volume %s: filesystem grown to %d bytes (not in use)", req.GetVolumeId(), size)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: false}, nil
}

// --- node -----------------------------------------------------------------------------------------

type node struct {
	csi.UnimplementedNodeServer
	d *driver
}

func nodeCapability(t csi.NodeServiceCapability_RPC_Type) *csi.NodeServiceCapability {
	return &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}}
}

func (n *node) NodeGetCapabilities(
	context.Context, *csi.NodeGetCapabilitiesRequest,
) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{
		nodeCapability(csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME),
		nodeCapability(csi.NodeServiceCapability_RPC_EXPAND_VOLUME),
	}}, nil
}

func (n *node) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.d.nodeID}, nil
}

// NodeStageVolume grows the filesystem to fill its image if the image grew (the volume is not
// mounted yet), then loop-mounts it at the staging path.
func (n *node) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "no staging target path")
	}
	if err := checkCapabilities([]*csi.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, err
	}
	image, err := n.d.image(req.GetVolumeId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	defer n.d.locks.lock(req.GetVolumeId())()
	if _, err := os.Stat(image); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", req.GetVolumeId(), err)
	}
	target := req.GetStagingTargetPath()
	if source, err := mountSource(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if source != "" {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if grown, err := growOffline(image); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if grown {
		log.Printf("volume %s: filesystem grown to fill its image before mounting", req.GetVolumeId())
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := mountImage(image, target, req.GetVolumeCapability()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := prepareRoot(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// mountImage loop-mounts the volume's ext4 image at target with the capability's mount flags.
func mountImage(image, target string, capability *csi.VolumeCapability) error {
	args := []string{"-t", "ext4", "-o", "loop"}
	for _, flag := range capability.GetMount().GetMountFlags() {
		args = append(args, "-o", flag)
	}
	_, err := run("mount", append(args, image, target)...)
	return err
}

func (n *node) NodeUnstageVolume(
	_ context.Context, req *csi.NodeUnstageVolumeRequest,
) (*csi.NodeUnstageVolumeResponse, error) {
	if req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "no staging target path")
	}
	defer n.d.locks.lock(req.GetVolumeId())()
	if err := unmount(req.GetStagingTargetPath()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// unmount unmounts path if it is a mount point (the loop device goes with it: mount -o loop sets
// autoclear) and removes the folder.
func unmount(path string) error {
	source, err := mountSource(path)
	if err != nil {
		return err
	}
	if source != "" {
		if _, err := run("umount", path); err != nil {
			return err
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// NodePublishVolume bind-mounts the staged filesystem at the pod's target path.
func (n *node) NodePublishVolume(
	_ context.Context, req *csi.NodePublishVolumeRequest,
) (*csi.NodePublishVolumeResponse, error) {
	target, staging := req.GetTargetPath(), req.GetStagingTargetPath()
	if target == "" || staging == "" {
		return nil, status.Error(codes.InvalidArgument, "no target or staging path")
	}
	if err := checkCapabilities([]*csi.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, err
	}
	if source, err := mountSource(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if source != "" {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	defer n.d.locks.lock(req.GetVolumeId())()
	staged, err := mountSource(staging)
	if err != nil || staged == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", req.GetVolumeId(), staging)
	}
	if err := n.growStaged(req.GetVolumeId(), staged, staging, req.GetVolumeCapability()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if _, err := run("mount", "--bind", staging, target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if req.GetReadonly() {
		if _, err := run("mount", "-o", "remount,bind,ro", target); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// growStaged grows a staged filesystem smaller than its image while no pod has it mounted: the volume
// grew while a pod used it, that pod is gone, and the kubelet kept the volume staged for the pod that
// replaces it (a Deployment's or StatefulSet's pod replaced at once, with no NodeUnstageVolume
// between). The staging mount goes, the filesystem grows offline and is mounted again, before the new
// pod's bind mount. Still in use elsewhere (or busy), it is left as it is: it grows at a later start.
func (n *node) growStaged(id, device, staging string, capability *csi.VolumeCapability) error {
	image, err := n.d.image(id)
	if err != nil {
		return err
	}
	size, err := fileSize(image)
	if err != nil {
		return err
	}
	fs, err := filesystemSize(device)
	if err != nil {
		return err
	}
	if fs >= size {
		return nil
	}
	users, err := mountPointsOf(device)
	if err != nil {
		return err
	}
	if len(users) > 1 {
		log.Printf("volume %s: filesystem smaller than its image but mounted by a pod (%v); it grows at a later start",
			id, users)
		return nil
	}
	if _, err := run("umount", staging); err != nil {
		log.Printf("volume %s: staging mount busy, not grown now: %v", id, err)
		return nil
	}
	grown, growErr := growOffline(image)
	if err := mountImage(image, staging, capability); err != nil {
		return fmt.Errorf("volume %s: mounting again after growing (%v): %w", id, growErr, err)
	}
	if growErr != nil {
		return growErr
	}
	if grown {
		log.Printf("volume %s: filesystem grown to fill its image between two pods", id)
	}
	return prepareRoot(staging)
}

func (n *node) NodeUnpublishVolume(
	_ context.Context, req *csi.NodeUnpublishVolumeRequest,
) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "no target path")
	}
	if err := unmount(req.GetTargetPath()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeExpandVolume reports the filesystem's size once it fills the image. A mounted ext4 cannot grow
// on this node, so for a volume grown while in use the answer is FailedPrecondition until a pod stages
// it again (NodeStageVolume grows it first); the kubelet then calls again and the claim's resize ends.
func (n *node) NodeExpandVolume(
	_ context.Context, req *csi.NodeExpandVolumeRequest,
) (*csi.NodeExpandVolumeResponse, error) {
	image, err := n.d.image(req.GetVolumeId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	defer n.d.locks.lock(req.GetVolumeId())()
	size, err := fileSize(image)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %v", req.GetVolumeId(), err)
	}
	device, err := loopDevice(image)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	source := image
	if device != "" {
		source = device
	}
	fs, err := filesystemSize(source)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if fs < size || fs < req.GetCapacityRange().GetRequiredBytes() {
		return nil, status.Errorf(codes.FailedPrecondition,
			"volume %s: the filesystem (%d bytes) grows to the image's %d bytes when the volume is next staged "+
				"(a mounted ext4 cannot grow here)", req.GetVolumeId(), fs, size)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: fs}, nil
}
