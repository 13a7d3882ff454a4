# Shared by the scripts in this folder: installing what they need, idempotently.
# shellcheck shell=bash

# Each line says how long the script has run, so a log shows where time goes.
say() { printf '\033[1m==> [%dm%02ds] %s\033[0m\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the Debian packages that are missing; does nothing when all are there.
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root; run as root or install them first"
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    # Services the tests run themselves (Avahi, in a namespace) must not
    # start on the host when installed: policy-rc.d says no for the
    # length of the install.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
    return $status
}

# Makes sure the toolchain rust-toolchain.toml pins is there (rustup installs it on first use).
ensure_rust() {
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null; then
        ensure_packages curl ca-certificates
        say "installing rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none \
            || die "cannot install rustup; install Rust 1.95 from https://rustup.rs and run this again"
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    cargo --version >/dev/null || die "cargo does not run"
}

# The packages every build needs: a C compiler for bundled SQLite.
BUILD_PACKAGES=(build-essential pkg-config ca-certificates)
