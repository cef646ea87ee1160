#!/usr/bin/env bash
# Build the gn_det image on a machine without a Docker engine or a registry, and smoke-test it.
#
#   sudo tools/build_container_local.sh            # as root (debootstrap, podman mount, chroot)
#
# Stages (each prints its wall time):
#   1. base:    a plain Debian (bookworm, minbase) made with debootstrap from the apt mirror this
#               machine uses, imported with `podman import` as localhost/gn_det-base:bookworm
#               (skipped when that image exists; GN_DET_REBUILD_BASE=1 remakes it);
#   2. build:   `podman build --isolation chroot --network host --build-arg BASE=<that image>`,
#               pip reading the index this machine's pip is configured with (else PyPI);
#   3. help:    the entrypoint `gn-det-train --help`, run as the image's user inside the image's
#               filesystem (`podman mount` + chroot: `podman run` may fail on resource limits here);
#   4. convert: `gn-det-convert` on a BN ResNet-18 checkpoint made by seed in the same filesystem,
#               to GN, and the written file loaded back.
#
# Environment: GN_DET_NO_CACHE=1 rebuilds every layer (podman build --no-cache); GN_DET_IMAGE (default localhost/gn_det:local), GN_DET_SUITE (bookworm),
# GN_DET_MIRROR (default: the first Debian URI in /etc/apt/sources*), GN_DET_WORK (/tmp/gn_det_container).
# Any stage that cannot run here stops the script with one line saying what is missing; exit 1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${GN_DET_IMAGE:-localhost/gn_det:local}"
SUITE="${GN_DET_SUITE:-bookworm}"
BASE_IMAGE="localhost/gn_det-base:${SUITE}"
WORK="${GN_DET_WORK:-/tmp/gn_det_container}"
NICE=(nice -n 10)

die() { echo "build_container_local: error: $*" >&2; exit 1; }
stage_start() { STAGE="$1"; T0=$(date +%s); echo "== ${STAGE} =="; }
stage_end() { local dt=$(( $(date +%s) - T0 )); TIMES+=("$(printf '%-8s %5d s' "$STAGE" "$dt")"); echo "== ${STAGE}: ${dt} s =="; }
TIMES=()

# ------------------------------------------------------------------ preflight
[ "$(id -u)" = 0 ] || die "run as root: debootstrap, podman mount and chroot need it (sudo $0)"
for tool in podman debootstrap chroot; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install podman debootstrap)"
done

debian_mirror() {  # the Debian archive this machine's apt uses
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +[^ ]*' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
          /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${GN_DET_MIRROR:-$(debian_mirror)}"

pip_index() {  # the index pip is configured with here, if it is a network one; else PyPI
  local idx
  idx=$( (pip3 config get global.index-url 2>/dev/null || true) | head -n1)
  idx="${PIP_INDEX_URL:-$idx}"
  case "$idx" in http://*|https://*) echo "$idx" ;; *) echo "https://pypi.org/simple" ;; esac
}
INDEX="$(pip_index)"
# The CA bundle pip trusts here (a TLS-intercepting proxy's CA lives in it); a build secret, not a layer.
CERT="${PIP_CERT:-$( (pip3 config get global.cert 2>/dev/null || true) | head -n1)}"
CERT_ARGS=()
CACHE_ARGS=()
[ "${GN_DET_NO_CACHE:-0}" != 1 ] || CACHE_ARGS=(--no-cache)
if [ -n "$CERT" ] && [ -s "$CERT" ]; then CERT_ARGS=(--secret "id=pip_cert,src=$CERT"); fi

probe() { python3 - "$1" <<'PY' || return 1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=20).close()
PY
}
probe "${MIRROR%/}/dists/${SUITE}/Release" || die "Debian mirror ${MIRROR} is not reachable (set GN_DET_MIRROR to one that is)"
probe "${INDEX%/}/torch/" || die "pip index ${INDEX} is not reachable (set PIP_INDEX_URL to one that is)"
echo "mirror ${MIRROR}; pip index ${INDEX}; pip CA bundle ${CERT:-none}; image ${IMAGE}; base ${BASE_IMAGE}; work ${WORK}"
mkdir -p "$WORK"

# ------------------------------------------------------------------ 1. base
stage_start base
if [ "${GN_DET_REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE_IMAGE"; then
  echo "$BASE_IMAGE exists (GN_DET_REBUILD_BASE=1 remakes it)"
else
  rm -rf "$WORK/rootfs"
  "${NICE[@]}" debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $WORK/debootstrap.log"
  tar -C "$WORK/rootfs" -c . | "${NICE[@]}" podman import - "$BASE_IMAGE" >/dev/null \
    || die "podman import of $WORK/rootfs failed"
  rm -rf "$WORK/rootfs"
fi
stage_end

# ------------------------------------------------------------------ 2. build
stage_start build
echo "log: $WORK/build.log"
{ "${NICE[@]}" podman build --isolation chroot --network host "${CACHE_ARGS[@]}" \
      --build-arg "BASE=${BASE_IMAGE}" --build-arg "PIP_INDEX_URL=${INDEX}" "${CERT_ARGS[@]}" \
      -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT"; echo $? > "$WORK/build.rc"; } 2>&1 \
  | tee "$WORK/build.log" | grep --line-buffered -E '^(STEP|COMMIT)|rror' || true
[ "$(cat "$WORK/build.rc")" = 0 ] || die "podman build failed; see $WORK/build.log"
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
stage_end

# ------------------------------------------------------------------ 3./4. inside the filesystem
CTR=$(podman create "$IMAGE")
MNT=$(podman mount "$CTR")
cleanup() {
  for d in proc dev; do umount "$MNT/$d" 2>/dev/null || true; done
  podman umount "$CTR" >/dev/null 2>&1 || true
  podman rm "$CTR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
mount -t proc proc "$MNT/proc" || die "cannot mount /proc into $MNT"
mount --bind /dev "$MNT/dev" || die "cannot bind /dev into $MNT"

# The image's user, working directory, environment and entrypoint, as `docker run` would use them.
USER_NAME=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
WORKDIR=$(podman image inspect --format '{{.Config.WorkingDir}}' "$IMAGE")
ENTRYPOINT=$(podman image inspect --format '{{join .Config.Entrypoint " "}}' "$IMAGE")
mapfile -t IMAGE_ENV < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
UID_GID=$(awk -F: -v u="$USER_NAME" '$1 == u {print $3 ":" $4}' "$MNT/etc/passwd")
[ -n "$UID_GID" ] || die "image user '$USER_NAME' is not in the image's /etc/passwd"
[ "${UID_GID%%:*}" != 0 ] || die "the image runs as root (USER '$USER_NAME'); it must not"
in_image() {  # run a shell line in the image's filesystem as its user, in its WORKDIR, with its ENV
  chroot --userspec="$UID_GID" "$MNT" /usr/bin/env -i "${IMAGE_ENV[@]}" HOME="/home/$USER_NAME" \
    OMP_NUM_THREADS=1 /bin/sh -c "cd '$WORKDIR' && $1"
}

stage_start help
HELP=$(in_image "$ENTRYPOINT --help") || die "'$ENTRYPOINT --help' failed in the image"
printf '%s\n' "$HELP" | head -n 3
stage_end

stage_start convert
in_image "python3 -c \"
import torch, torchvision
torch.manual_seed(0)
m = torchvision.models.resnet18(num_classes=10)
for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
    bn.running_mean.uniform_(-1, 1); bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5); bn.bias.data.uniform_(-0.5, 0.5)
torch.save(m.state_dict(), '/output/r18_bn.pth')
\" && gn-det-convert /output/r18_bn.pth --norm gn --output /output/r18_gn.pth | tail -n 4 \
   && python3 -c \"
import torch
sd = torch.load('/output/r18_gn.pth', map_location='cpu', weights_only=True)
sd = sd.get('model', sd)
n = sum(1 for k in sd if 'running_' in k)
assert n == 0, f'{n} BN statistics left in the GN checkpoint'
print('converted checkpoint:', len(sd), 'tensors, no BN statistics; owner uid', __import__('os').stat('/output/r18_gn.pth').st_uid)
\"" || die "gn-det-convert failed in the image"
stage_end

echo "== times (this machine: $(nproc) cores) =="
printf '%s\n' "${TIMES[@]}"
