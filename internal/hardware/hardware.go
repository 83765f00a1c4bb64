// Package hardware builds the machine's hardware fingerprint (SPEC §4) from procfs and sysfs.
//
// The fingerprint is mixed into the keys that decrypt the device's resources, so a value that
// changes without the hardware changing locks the device out. Every source is therefore chosen for
// stability over detail: nothing that moves with load, clock frequency, free memory, power mode,
// kernel device numbering or boot order is read. Only files are read (no tools are run, no root
// is needed), all relative to a root directory so tests can point it at fixture trees.
package hardware

import (
	"bytes"
	"cmp"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Unknown is written for a part of the fingerprint that the machine does not reveal.
const Unknown = "Unknown"

// Info is the machine's hardware description. Each field is a single line, or [Unknown].
type Info struct {
	CPU         string
	GPU         string
	Memory      string
	DriveSerial string
}

// String returns the fingerprint string the Resource API expects:
// "CPU: {cpu}. GPU: {gpu}. Memory: {memory}. DriveSerial: {serial}".
func (i Info) String() string {
	return "CPU: " + i.CPU + ". GPU: " + i.GPU + ". Memory: " + i.Memory + ". DriveSerial: " + i.DriveSerial
}

// FS reads the machine's hardware description from a root directory ("/" in production),
// so tests point it at fixture trees under testdata/.
//
// Paths below the root are followed through symbolic links as the kernel lays them out
// (/sys/block/* and /sys/class/drm/* are relative links into /sys/devices). An absolute link in
// a fixture would resolve against the real "/", so fixtures use plain directories or relative links.
type FS struct {
	root string
}

// NewFS returns an FS that reads /proc and /sys below root.
func NewFS(root string) FS {
	return FS{root: root}
}

// Fingerprint returns the fingerprint string of the machine whose /proc and /sys are under root.
func Fingerprint(root string) string {
	return NewFS(root).Info().String()
}

// Info reads the hardware description. It never fails: a part that cannot be read is [Unknown].
func (fs FS) Info() Info {
	return Info{
		CPU:         orUnknown(fs.cpu()),
		GPU:         orUnknown(fs.gpu()),
		Memory:      orUnknown(fs.memory()),
		DriveSerial: orUnknown(fs.driveSerial()),
	}
}

// cpu names the processor, trying in order:
//
//  1. /proc/cpuinfo "model name" of the first processor: x86, and 32-bit ARM kernels.
//  2. /proc/cpuinfo "Hardware": the SoC name on kernels that still print it (Raspberry Pi).
//  3. /proc/device-tree/model: the board, on arm64 kernels that print neither (Jetson).
//  4. /sys/devices/soc0/machine: the kernel fills it from the same device-tree "model", and it
//     stays visible inside containers, where Docker masks /sys/firmware and with it
//     /proc/device-tree; this keeps the fingerprint the same inside and outside a container.
//
// The number of processors is deliberately left out: /proc/cpuinfo lists online CPUs only,
// and Jetson power modes (nvpmodel) and CPU hotplug take cores offline at run time.
func (fs FS) cpu() string {
	if b, err := fs.read("proc/cpuinfo"); err == nil {
		if v := field(b, "model name"); v != "" {
			return v
		}
		if v := field(b, "Hardware"); v != "" {
			return v
		}
	}
	if v := fs.readString("proc/device-tree/model"); v != "" {
		return v
	}
	return fs.readString("sys/devices/soc0/machine")
}

// memory is MemTotal from /proc/meminfo rounded up to whole GiB, e.g. "16 GiB".
// MemTotal is physical memory less what firmware and the kernel reserve; that reserve changes
// by megabytes with kernel updates, crashkernel settings and Jetson carve-outs, so an exact
// kB or MiB value would change the fingerprint on a software update. Rounding up to GiB also
// lands on the installed size for most machines.
func (fs FS) memory() string {
	b, err := fs.read("proc/meminfo")
	if err != nil {
		return ""
	}
	v, ok := strings.CutSuffix(field(b, "MemTotal"), " kB")
	if !ok {
		return ""
	}
	kb, err := strconv.ParseUint(v, 10, 64)
	if err != nil || kb == 0 {
		return ""
	}
	const kbPerGiB = 1 << 20
	return strconv.FormatUint((kb+kbPerGiB-1)/kbPerGiB, 10) + " GiB"
}

// driveSerial is the serial number of a built-in disk, or else the board's serial number.
//
// Disks are those in /sys/block named mmcblk*, nvme* or sd* (loop, ram, zram, dm, md and the
// like have no hardware serial). Removable sd* devices (USB sticks) are skipped so that plugging
// one in does not change the fingerprint. Kernel names are not stable across boots (sda and sdb
// swap with probe order), so the choice does not depend on them: the first class in the order
// mmcblk (soldered eMMC), nvme, sd wins, and within a class the smallest serial.
//
// The device-tree serial-number (Jetson, Raspberry Pi) is used only when no disk has a serial.
// A disk comes first because /sys/block stays readable inside containers while
// /proc/device-tree is masked there.
func (fs FS) driveSerial() string {
	type disk struct {
		class  int
		serial string
	}
	var disks []disk
	entries, _ := os.ReadDir(fs.path("sys/block")) // Entries are symlinks: do not filter on IsDir.
	for _, e := range entries {
		name := e.Name()
		class := diskClass(name)
		if class < 0 {
			continue
		}
		dir := "sys/block/" + name
		if class == classSD && fs.readString(dir+"/removable") == "1" {
			continue
		}
		if s := fs.diskSerial(dir, class); s != "" {
			disks = append(disks, disk{class, s})
		}
	}
	if len(disks) > 0 {
		d := slices.MinFunc(disks, func(a, b disk) int {
			return cmp.Or(cmp.Compare(a.class, b.class), strings.Compare(a.serial, b.serial))
		})
		return d.serial
	}
	return fs.readString("proc/device-tree/serial-number")
}

const (
	classMMC = iota
	classNVMe
	classSD
)

func diskClass(name string) int {
	switch {
	case strings.HasPrefix(name, "mmcblk"):
		return classMMC
	case strings.HasPrefix(name, "nvme"):
		return classNVMe
	case strings.HasPrefix(name, "sd"):
		return classSD
	}
	return -1
}

// diskSerial reads the serial of the disk whose /sys/block directory is dir.
func (fs FS) diskSerial(dir string, class int) string {
	if s := fs.readString(dir + "/device/serial"); s != "" && !allZero(s) {
		return s
	}
	switch class {
	case classMMC:
		// Older kernels and some cards have no serial attribute; the CID register holds the
		// serial number together with manufacturer and date, and is just as fixed.
		if s := fs.readString(dir + "/device/cid"); s != "" && !allZero(s) {
			return s
		}
	case classSD:
		// libata (SATA) disks have no serial attribute; SCSI VPD page 0x80 is the unit serial
		// number, world-readable: a 4-byte header (page code 0x80, big-endian length), then ASCII.
		b, err := fs.read(dir + "/device/vpd_pg80")
		if err != nil || len(b) < 4 || b[1] != 0x80 {
			return ""
		}
		n := min(int(b[2])<<8|int(b[3]), len(b)-4)
		if s := clean(b[4 : 4+n]); !allZero(s) {
			return s
		}
	}
	return ""
}

// gpu names the graphics processor, trying in order:
//
//  1. /proc/driver/nvidia/gpus/*/information "Model" (NVIDIA driver), of the GPU with the
//     lowest PCI address.
//  2. A device-tree node named "gpu" among /sys/bus/platform/devices (Jetson, Raspberry Pi and
//     other SoCs): its first compatible string, e.g. "nvidia,ga10b". Read from the device's
//     uevent rather than /proc/device-tree, which containers mask.
//  3. /sys/class/drm/card*: PCI vendor and device IDs, e.g. "Intel 8086:9bc4", or the driver
//     name of a non-PCI device. Card numbers follow probe order, so of several cards the
//     smallest description is taken, not card0. Firmware framebuffers (simpledrm, efifb) are
//     skipped: they come and go as the real driver loads.
//
// Sources 1 and 3 exist only while the GPU's driver is loaded, so a loader started before the
// driver (or on a host without it) sees a different GPU; start it after the driver is up.
// Source 2 is created from the device tree at boot, whatever the driver.
func (fs FS) gpu() string {
	if v := fs.nvidiaGPU(); v != "" {
		return v
	}
	if v := fs.deviceTreeGPU(); v != "" {
		return v
	}
	return fs.drmGPU()
}

func (fs FS) nvidiaGPU() string {
	entries, _ := os.ReadDir(fs.path("proc/driver/nvidia/gpus")) // Sorted by name: the PCI address.
	for _, e := range entries {
		b, err := fs.read("proc/driver/nvidia/gpus/" + e.Name() + "/information")
		if err != nil {
			continue
		}
		if v := field(b, "Model"); v != "" {
			return v
		}
	}
	return ""
}

func (fs FS) deviceTreeGPU() string {
	entries, _ := os.ReadDir(fs.path("sys/bus/platform/devices"))
	for _, e := range entries {
		b, err := fs.read("sys/bus/platform/devices/" + e.Name() + "/uevent")
		if err != nil {
			continue
		}
		if ueventValue(b, "OF_NAME") != "gpu" {
			continue
		}
		if v := ueventValue(b, "OF_COMPATIBLE_0"); v != "" {
			return v
		}
	}
	return ""
}

// firmwareFramebuffers are DRM drivers that drive no GPU of their own: the framebuffer firmware
// left behind, replaced once the real driver loads, and software-only devices.
var firmwareFramebuffers = []string{"simple-framebuffer", "simpledrm", "efi-framebuffer", "efifb", "vesafb", "vesa-framebuffer", "ofdrm", "vgem", "vkms"}

// pciVendors names the GPU vendors worth naming; others are written as "PCI vvvv:dddd".
var pciVendors = map[string]string{"10de": "NVIDIA", "1002": "AMD", "8086": "Intel"}

func (fs FS) drmGPU() string {
	entries, _ := os.ReadDir(fs.path("sys/class/drm"))
	var found []string
	for _, e := range entries {
		num, ok := strings.CutPrefix(e.Name(), "card")
		if !ok {
			continue
		}
		if _, err := strconv.Atoi(num); err != nil {
			continue // A connector such as card0-HDMI-A-1.
		}
		dev := "sys/class/drm/" + e.Name() + "/device"
		var driver string
		if b, err := fs.read(dev + "/uevent"); err == nil {
			driver = ueventValue(b, "DRIVER")
		}
		if slices.Contains(firmwareFramebuffers, driver) {
			continue
		}
		vendor := strings.TrimPrefix(fs.readString(dev+"/vendor"), "0x")
		device := strings.TrimPrefix(fs.readString(dev+"/device"), "0x")
		switch {
		case vendor != "" && device != "":
			name := cmp.Or(pciVendors[vendor], "PCI")
			found = append(found, name+" "+vendor+":"+device)
		case driver != "":
			found = append(found, driver)
		}
	}
	if len(found) == 0 {
		return ""
	}
	return slices.Min(found)
}

func (fs FS) path(name string) string {
	return filepath.Join(fs.root, filepath.FromSlash(name))
}

func (fs FS) read(name string) ([]byte, error) {
	return os.ReadFile(fs.path(name))
}

// readString reads a single-value file and cleans it; it is "" when the file is absent.
func (fs FS) readString(name string) string {
	b, err := fs.read(name)
	if err != nil {
		return ""
	}
	return clean(b)
}

// clean turns a raw file value into one line. Device-tree strings end in NUL and NVMe serials
// are space-padded; runs of white space (tabs, line breaks) become one space.
func clean(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// field returns the cleaned value of the first "key : value" line with the given key, as in
// /proc/cpuinfo, /proc/meminfo and the NVIDIA driver's information files.
func field(b []byte, key string) string {
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == key {
			return clean([]byte(v))
		}
	}
	return ""
}

// ueventValue returns the value of a KEY=value line of a sysfs uevent file.
func ueventValue(b []byte, key string) string {
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			return clean([]byte(v))
		}
	}
	return ""
}

// allZero reports whether s is a placeholder such as "0" or "0x00000000" that unprogrammed
// devices report instead of a serial: such a value would identify nothing.
func allZero(s string) bool {
	return strings.Trim(strings.TrimPrefix(s, "0x"), "0") == ""
}

func orUnknown(s string) string {
	if s == "" {
		return Unknown
	}
	return s
}
