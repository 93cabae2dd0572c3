# Two commands do all set-up on a fresh machine (see README):
#   make demo   set up, then run the main job
#   make test   set up, then run the whole test suite
# Set-up is idempotent: stamps in .venv/ make repeated runs fast.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
VENV_ABS := $(abspath $(VENV))
PY := $(VENV_ABS)/bin/python
BUILD_DIR ?= build

# Every process started from here keeps DDS on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds.xml
export MUJOCO_GL ?= egl
export PIP_DISABLE_PIP_VERSION_CHECK := 1

PACKAGE_SOURCES := $(shell find persistence_ros scripts launch config msg cmake -type f \
	-not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null) CMakeLists.txt package.xml
STAND_IN_SOURCES := $(wildcard stand_in/vision_msgs/* stand_in/vision_msgs/msg/*.msg) \
	cmake/wheel_include_dirs.cmake

VIEWER_DIR := test/viewer

.PHONY: help setup viewer-setup build demo test lint clean

help:
	@echo 'make demo    set up (.venv, build, install) and run the demo'
	@echo 'make test    set up and run the whole test suite'
	@echo 'make build   rebuild and reinstall the package into .venv'
	@echo 'make clean   remove build outputs (keeps .venv and $(VIEWER_DIR)/node_modules)'

# System libraries MuJoCo renders with (Mesa EGL/OSMesa, CPU).
$(VENV)/.system-stamp: scripts/install-system-deps.sh
	@mkdir -p $(VENV)
	bash scripts/install-system-deps.sh
	@touch $@

$(VENV)/.deps-stamp: requirements.txt requirements-nodeps.txt constraints.txt $(VENV)/.system-stamp
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo 'Installing Python dependencies into $(VENV) (first time: several minutes)...'
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt -c constraints.txt 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(PY) -c 'import rclpy, torch, torchvision, cv2, mujoco, rosbags, trackeval'
	@touch $@

# vision_msgs is not on PyPI: where it is not importable, build the stand-in package
# (stand_in/vision_msgs: the same package name, types and fields) into the venv prefix. An
# installed stand-in (share/vision_msgs/STAND_IN) is rebuilt when its sources change; a real
# vision_msgs is left alone. On a robot colcon never sees the stand-in (COLCON_IGNORE).
$(VENV)/.vision-msgs-stamp: $(VENV)/.deps-stamp $(STAND_IN_SOURCES)
	@if (cd / && $(PY) -c 'import vision_msgs.msg') 2>/dev/null \
			&& test ! -f $(VENV_ABS)/share/vision_msgs/STAND_IN; then \
		echo 'vision_msgs is installed: the stand-in is not built'; \
	else \
		echo 'Building the vision_msgs stand-in (stand_in/vision_msgs) into $(VENV)'; \
		mkdir -p $(BUILD_DIR)/vision_msgs && \
		cmake -S stand_in/vision_msgs -B $(BUILD_DIR)/vision_msgs -Wno-dev \
			-DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
			-DCMAKE_INSTALL_PREFIX=$(VENV_ABS) -DCMAKE_PREFIX_PATH=$(VENV_ABS) \
			-DPython3_EXECUTABLE=$(PY) -DPYTHON_EXECUTABLE=$(PY) \
			> $(BUILD_DIR)/vision_msgs/configure.log 2>&1 \
			|| { cat $(BUILD_DIR)/vision_msgs/configure.log; exit 1; }; \
		cmake --build $(BUILD_DIR)/vision_msgs -j 2 > $(BUILD_DIR)/vision_msgs/build.log 2>&1 \
			|| { tail -50 $(BUILD_DIR)/vision_msgs/build.log; exit 1; }; \
		cmake --install $(BUILD_DIR)/vision_msgs > $(BUILD_DIR)/vision_msgs/install.log 2>&1 \
			|| { tail -50 $(BUILD_DIR)/vision_msgs/install.log; exit 1; }; \
		(cd / && $(PY) -c 'from vision_msgs.msg import Detection2DArray'); \
	fi
	@touch $@

# ament_cmake build of msg/ + the Python package, installed into the venv prefix.
$(VENV)/.build-stamp: $(VENV)/.deps-stamp $(VENV)/.vision-msgs-stamp $(PACKAGE_SOURCES)
	@mkdir -p $(BUILD_DIR)
	cmake -S . -B $(BUILD_DIR) -Wno-dev -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
		-DCMAKE_INSTALL_PREFIX=$(VENV_ABS) -DCMAKE_PREFIX_PATH=$(VENV_ABS) \
		-DPython3_EXECUTABLE=$(PY) -DPYTHON_EXECUTABLE=$(PY) > $(BUILD_DIR)/configure.log 2>&1 \
		|| { cat $(BUILD_DIR)/configure.log; exit 1; }
	cmake --build $(BUILD_DIR) -j 2 > $(BUILD_DIR)/build.log 2>&1 || { tail -50 $(BUILD_DIR)/build.log; exit 1; }
	@# a module removed from the source must not stay importable from an earlier install
	rm -rf "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/persistence_ros"
	cmake --install $(BUILD_DIR) > $(BUILD_DIR)/install.log 2>&1 || { tail -50 $(BUILD_DIR)/install.log; exit 1; }
	cd / && $(PY) -c 'from persistence_ros.msg import Detection2DArray, TrackArray'
	@touch $@

setup: $(VENV)/.build-stamp

# The viewer test's npm packages (Foxglove Studio's studio-base, puppeteer-core, ...), exactly
# as package-lock.json pins them; no install scripts run (puppeteer-core downloads no browser:
# the test drives Debian's chromium).
$(VIEWER_DIR)/node_modules/.install-stamp: $(VIEWER_DIR)/package.json $(VIEWER_DIR)/package-lock.json $(VENV)/.system-stamp
	cd $(VIEWER_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

viewer-setup: $(VIEWER_DIR)/node_modules/.install-stamp

build:
	@rm -f $(VENV)/.build-stamp
	@$(MAKE) --no-print-directory setup

demo: setup
	$(VENV_ABS)/bin/persistence-ros demo --out demo_output

# pytest is started as .venv/bin/pytest (not python -m pytest) so the installed package, which
# holds the generated messages, is imported rather than the source tree.
test: setup viewer-setup
	$(VENV_ABS)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV_ABS)/bin/pytest test/test_lint.py

clean:
	rm -rf $(BUILD_DIR) $(VENV)/.build-stamp $(VENV)/.vision-msgs-stamp
