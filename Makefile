# Two entry points for a fresh machine: `make run` (main job on this CPU) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test venv sysdeps clean board-arm64 board-armhf board-arm64-stop board-armhf-stop

# Debian packages: OpenSSH server (SSH profiling tests use a real sshd), Fashion-MNIST (offline data set), and
# qemu-user-static + binfmt-support + debootstrap (emulated ARM boards, make board-arm64 / board-armhf).
sysdeps:
	@if ! [ -x /usr/sbin/sshd ] || ! [ -d /usr/share/datasets/fashion-mnist ] || ! [ -x /usr/bin/qemu-aarch64-static ] \
	    || ! [ -x /usr/sbin/debootstrap ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openssh-server dataset-fashion-mnist \
	    qemu-user-static binfmt-support debootstrap >/dev/null; \
	fi

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q torch==2.13.0 -e '.[tflite,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/ofakit run

test: sysdeps $(STAMP)
	$(BIN)/python -P -m pytest -q tests

# Emulated Raspberry Pi OS-like boards (Debian ARM root under qemu-user, its own sshd on 127.0.0.1): the first start
# builds the root into ~/.cache/ofakit/boards/ARCH (minutes); the inventory is written to .boards/ARCH/devices.yaml.
board-arm64 board-armhf: sysdeps
	$(SUDO) boards/board.sh start $(@:board-%=%)

board-arm64-stop board-armhf-stop:
	$(SUDO) boards/board.sh stop $(patsubst board-%-stop,%,$@)

clean:
	rm -rf $(VENV) build *.egg-info
