package hardware

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The expected strings are read off the fixture files by hand, not produced by the code.
var fixtures = []struct {
	root string
	want string
}{
	{
		// model name; Model of the GPU at the lowest PCI address (the ASPEED VGA loses to the
		// NVIDIA driver); MemTotal 131680512 kB = 125.6 GiB; NVMe serial without its padding.
		root: "testdata/x86-nvme-nvidia",
		want: "CPU: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz. GPU: NVIDIA A100-PCIE-40GB. Memory: 126 GiB. DriveSerial: S4EWNX0R123456",
	},
	{
		// No model name nor Hardware: device-tree model without its NUL; the "gpu" platform
		// device; 30536560 kB = 29.1 GiB; the eMMC serial (the board serial is the fallback).
		root: "testdata/jetson-agx-orin",
		want: "CPU: NVIDIA Jetson AGX Orin Developer Kit. GPU: nvidia,ga10b. Memory: 30 GiB. DriveSerial: 0x8a3b1c2d",
	},
	{
		// vda is not a disk class with a serial; the only DRM card is the firmware framebuffer.
		root: "testdata/bare-vm",
		want: "CPU: AMD EPYC 7763 64-Core Processor. GPU: Unknown. Memory: 4 GiB. DriveSerial: Unknown",
	},
	{
		// The smaller of the two SATA serials (it is on sdb), the removable sdc skipped;
		// 16303120 kB = 15.5 GiB.
		root: "testdata/x86-sata-intel",
		want: "CPU: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz. GPU: Intel 8086:3e92. Memory: 16 GiB. DriveSerial: S3Z9NB0K123456A",
	},
	{
		// Hardware line; the "gpu" node, not the DRM card order; 8049560 kB = 7.7 GiB; SD card.
		root: "testdata/raspberry-pi-4",
		want: "CPU: BCM2835. GPU: brcm,bcm2711-vc5. Memory: 8 GiB. DriveSerial: 0x0a1b2c3d",
	},
}

func TestFingerprint(t *testing.T) {
	for _, tt := range fixtures {
		t.Run(filepath.Base(tt.root), func(t *testing.T) {
			if got := Fingerprint(tt.root); got != tt.want {
				t.Errorf("Fingerprint(%q)\n got %q\nwant %q", tt.root, got, tt.want)
			}
		})
	}
}

func TestFingerprintRepeatable(t *testing.T) {
	for _, tt := range fixtures {
		fs := NewFS(tt.root)
		first := fs.Info()
		for range 3 {
			if got := fs.Info(); got != first {
				t.Errorf("%s: Info() = %+v, earlier %+v", tt.root, got, first)
			}
		}
	}
}

// TestFingerprintIgnoresVolatileValues changes everything in cpuinfo and meminfo that moves with
// load and clock: the fingerprint must not move with it.
func TestFingerprintIgnoresVolatileValues(t *testing.T) {
	volatile := regexp.MustCompile(`(?m)^(cpu MHz|BogoMIPS|bogomips|MemFree|MemAvailable|Buffers|Cached|SwapFree)(\s*:\s*)[0-9.]+`)
	for _, tt := range fixtures {
		t.Run(filepath.Base(tt.root), func(t *testing.T) {
			root := copyFixture(t, tt.root)
			for _, name := range []string{"proc/cpuinfo", "proc/meminfo"} {
				b := readFile(t, root, name)
				changed := volatile.ReplaceAll(b, []byte("${1}${2}1234.567"))
				if string(changed) == string(b) && name == "proc/meminfo" {
					t.Fatalf("%s: nothing volatile to change", name)
				}
				writeFile(t, root, name, string(changed))
			}
			if got := Fingerprint(root); got != tt.want {
				t.Errorf("after changing volatile values\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestFingerprintVariants runs fixtures changed the way real machines differ from them.
func TestFingerprintVariants(t *testing.T) {
	tests := []struct {
		name   string
		root   string
		change func(t *testing.T, root string)
		want   string
	}{
		{
			// Docker masks /sys/firmware, and /proc/device-tree links into it.
			name:   "jetson in a container",
			root:   "testdata/jetson-agx-orin",
			change: func(t *testing.T, root string) { remove(t, root, "proc/device-tree") },
			want:   "CPU: NVIDIA Jetson AGX Orin Developer Kit. GPU: nvidia,ga10b. Memory: 30 GiB. DriveSerial: 0x8a3b1c2d",
		},
		{
			name:   "jetson without a disk serial uses the board serial",
			root:   "testdata/jetson-agx-orin",
			change: func(t *testing.T, root string) { remove(t, root, "sys/block/mmcblk0", "sys/block/mmcblk0boot0") },
			want:   "CPU: NVIDIA Jetson AGX Orin Developer Kit. GPU: nvidia,ga10b. Memory: 30 GiB. DriveSerial: 1421022012345",
		},
		{
			name: "eMMC without a serial attribute uses its CID",
			root: "testdata/jetson-agx-orin",
			change: func(t *testing.T, root string) {
				remove(t, root, "sys/block/mmcblk0/device/serial", "sys/block/mmcblk0boot0")
			},
			want: "CPU: NVIDIA Jetson AGX Orin Developer Kit. GPU: nvidia,ga10b. Memory: 30 GiB. DriveSerial: 150100474a54443452088a3b1c2d9a00",
		},
		{
			name: "added NVMe does not displace the eMMC",
			root: "testdata/jetson-agx-orin",
			change: func(t *testing.T, root string) {
				writeFile(t, root, "sys/block/nvme0n1/device/serial", "000AAA\n")
			},
			want: "CPU: NVIDIA Jetson AGX Orin Developer Kit. GPU: nvidia,ga10b. Memory: 30 GiB. DriveSerial: 0x8a3b1c2d",
		},
		{
			name: "placeholder serials are no serials",
			root: "testdata/jetson-agx-orin",
			change: func(t *testing.T, root string) {
				writeFile(t, root, "sys/block/mmcblk0/device/serial", "0x00000000\n")
				writeFile(t, root, "sys/block/mmcblk0/device/cid", "00000000000000000000000000000000\n")
				remove(t, root, "sys/block/mmcblk0boot0", "proc/device-tree/serial-number")
			},
			want: "CPU: NVIDIA Jetson AGX Orin Developer Kit. GPU: nvidia,ga10b. Memory: 30 GiB. DriveSerial: Unknown",
		},
		{
			name: "SATA disks swap kernel names",
			root: "testdata/x86-sata-intel",
			change: func(t *testing.T, root string) {
				rename(t, root, "sys/block/sda", "sys/block/sdx")
				rename(t, root, "sys/block/sdb", "sys/block/sda")
				rename(t, root, "sys/block/sdx", "sys/block/sdb")
			},
			want: "CPU: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz. GPU: Intel 8086:3e92. Memory: 16 GiB. DriveSerial: S3Z9NB0K123456A",
		},
		{
			name: "DRM cards probed in another order",
			root: "testdata/raspberry-pi-4",
			change: func(t *testing.T, root string) {
				remove(t, root, "sys/bus/platform/devices")
				rename(t, root, "sys/class/drm/card0", "sys/class/drm/card9")
			},
			want: "CPU: BCM2835. GPU: v3d. Memory: 8 GiB. DriveSerial: 0x0a1b2c3d",
		},
		{
			// The fingerprint depends on the driver being loaded; see FS.gpu.
			name:   "NVIDIA driver not loaded",
			root:   "testdata/x86-nvme-nvidia",
			change: func(t *testing.T, root string) { remove(t, root, "proc/driver/nvidia") },
			want:   "CPU: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz. GPU: PCI 1a03:2000. Memory: 126 GiB. DriveSerial: S4EWNX0R123456",
		},
		{
			name: "ragged spacing in values",
			root: "testdata/bare-vm",
			change: func(t *testing.T, root string) {
				writeFile(t, root, "proc/cpuinfo", "processor\t: 0\nmodel name\t:  Intel(R) Core(TM)2 Duo CPU     E8400  @ 3.00GHz \n")
			},
			want: "CPU: Intel(R) Core(TM)2 Duo CPU E8400 @ 3.00GHz. GPU: Unknown. Memory: 4 GiB. DriveSerial: Unknown",
		},
		{
			name: "malformed meminfo",
			root: "testdata/bare-vm",
			change: func(t *testing.T, root string) {
				writeFile(t, root, "proc/meminfo", "MemTotal: lots\nMemFree: 1 kB\n")
			},
			want: "CPU: AMD EPYC 7763 64-Core Processor. GPU: Unknown. Memory: Unknown. DriveSerial: Unknown",
		},
		{
			name:   "empty root",
			root:   "testdata/bare-vm",
			change: func(t *testing.T, root string) { remove(t, root, "proc", "sys") },
			want:   "CPU: Unknown. GPU: Unknown. Memory: Unknown. DriveSerial: Unknown",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := copyFixture(t, tt.root)
			tt.change(t, root)
			if got := Fingerprint(root); got != tt.want {
				t.Errorf("\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestFingerprintMissingRoot(t *testing.T) {
	const want = "CPU: Unknown. GPU: Unknown. Memory: Unknown. DriveSerial: Unknown"
	if got := Fingerprint(filepath.Join(t.TempDir(), "absent")); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestFingerprintFollowsSymlinks lays sysfs out as the kernel does: /sys/block, /sys/class/drm
// and /sys/bus/platform/devices hold relative links into /sys/devices.
func TestFingerprintFollowsSymlinks(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: Test CPU\ncpu MHz\t\t: 1000.000\n")
	writeFile(t, root, "proc/meminfo", "MemTotal:        2097152 kB\nMemFree:          123456 kB\n")

	nvme := "sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0"
	writeFile(t, root, nvme+"/serial", "LINKED-NVME-SERIAL  \n")
	writeFile(t, root, nvme+"/nvme0n1/removable", "0\n")
	symlink(t, root, "../../nvme0", nvme+"/nvme0n1/device")
	symlink(t, root, "../devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1", "sys/block/nvme0n1")
	loop := "sys/devices/virtual/block/loop0"
	writeFile(t, root, loop+"/removable", "0\n")
	symlink(t, root, "../devices/virtual/block/loop0", "sys/block/loop0")

	pci := "sys/devices/pci0000:00/0000:00:02.0"
	writeFile(t, root, pci+"/vendor", "0x1002\n")
	writeFile(t, root, pci+"/device", "0x73bf\n")
	writeFile(t, root, pci+"/uevent", "DRIVER=amdgpu\n")
	writeFile(t, root, pci+"/drm/card1/dev", "226:1\n")
	symlink(t, root, "../../../0000:00:02.0", pci+"/drm/card1/device")
	symlink(t, root, "../../devices/pci0000:00/0000:00:02.0/drm/card1", "sys/class/drm/card1")

	const want = "CPU: Test CPU. GPU: AMD 1002:73bf. Memory: 2 GiB. DriveSerial: LINKED-NVME-SERIAL"
	if got := Fingerprint(root); got != want {
		t.Errorf("\n got %q\nwant %q", got, want)
	}

	// The NVIDIA driver's directories are named by PCI address; the lowest one wins.
	writeFile(t, root, "proc/driver/nvidia/gpus/0000:81:00.0/information", "Model: \t\t NVIDIA L4\n")
	writeFile(t, root, "proc/driver/nvidia/gpus/0000:01:00.0/information", "Model: \t\t NVIDIA RTX A4000\n")
	const wantNVIDIA = "CPU: Test CPU. GPU: NVIDIA RTX A4000. Memory: 2 GiB. DriveSerial: LINKED-NVME-SERIAL"
	if got := Fingerprint(root); got != wantNVIDIA {
		t.Errorf("\n got %q\nwant %q", got, wantNVIDIA)
	}
}

func TestFingerprintThisMachine(t *testing.T) {
	got := Fingerprint("/")
	t.Logf("Fingerprint(\"/\") = %q", got)
	if !regexp.MustCompile(`^CPU: [^\n]+\. GPU: [^\n]+\. Memory: [^\n]+\. DriveSerial: [^\n]+$`).MatchString(got) {
		t.Errorf("Fingerprint(\"/\") = %q, want the four labelled parts on one line", got)
	}
	if again := Fingerprint("/"); again != got {
		t.Errorf("second Fingerprint(\"/\") = %q, first %q", again, got)
	}
}

func TestInfoString(t *testing.T) {
	i := Info{CPU: "c", GPU: "g", Memory: "m", DriveSerial: "s"}
	if got, want := i.String(), "CPU: c. GPU: g. Memory: m. DriveSerial: s"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func copyFixture(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "root")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func readFile(t *testing.T, root, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, root, name, content string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, root string, names ...string) {
	t.Helper()
	for _, name := range names {
		if err := os.RemoveAll(filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func rename(t *testing.T, root, from, to string) {
	t.Helper()
	if err := os.Rename(filepath.Join(root, from), filepath.Join(root, to)); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, root, target, name string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(target, "..") {
		t.Fatalf("symlink %s: fixtures use relative targets, got %s", name, target)
	}
}
