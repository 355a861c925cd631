# shellcheck shell=bash
# Shared helpers for the scripts in scripts/. Source it, do not execute it:
#
#   TP_SCRIPT_NAME=dev-db
#   . "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
#
# Everything here writes to stderr only, so callers keep stdout for results.

# Absolute path of the repository root (the parent of scripts/).
TP_REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
export TP_REPO_ROOT

tp_log() {
	printf '%s: %s\n' "${TP_SCRIPT_NAME:-tenant-plane}" "$*" >&2
}

tp_warn() {
	tp_log "warning: $*"
}

tp_die() {
	tp_log "error: $*"
	exit 1
}

# tp_have CMD: is CMD on PATH?
tp_have() {
	command -v "$1" >/dev/null 2>&1
}

# tp_random_hex N: N random bytes as 2*N lowercase hex characters.
tp_random_hex() {
	local n=$1 out
	if tp_have openssl; then
		out=$(openssl rand -hex "$n")
	else
		out=$(od -An -v -N "$n" -tx1 /dev/urandom | tr -d ' \n')
	fi
	[[ ${#out} -eq $((2 * n)) ]] || tp_die "could not generate $n random bytes"
	printf '%s' "$out"
}

# tp_random_base64 N: N random bytes, standard base64 (with padding), one line.
tp_random_base64() {
	local n=$1 out
	if tp_have openssl; then
		out=$(openssl rand -base64 "$n" | tr -d '\n')
	else
		out=$(head -c "$n" /dev/urandom | base64 | tr -d '\n')
	fi
	[[ -n $out ]] || tp_die "could not generate $n random bytes"
	printf '%s' "$out"
}

# tp_redact_url URL: the URL with its password replaced by ***, for messages.
tp_redact_url() {
	# shellcheck disable=SC2001 # a regex replacement is clearer with sed
	sed -E 's#^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"
}

# tp_ensure_toolchain: rust-toolchain.toml names an exact version. A machine
# whose rustup has that version only as "stable" would try to download it
# again (and fail without network): link the installed one under that name.
tp_ensure_toolchain() {
	local pinned host
	pinned=$(sed -n 's/^channel = "\(.*\)"$/\1/p' "$TP_REPO_ROOT/rust-toolchain.toml")
	tp_have rustup || return 0
	rustup toolchain list | grep -q "^$pinned" && return 0
	if [[ $(RUSTUP_TOOLCHAIN=stable rustc --version 2>/dev/null) == "rustc $pinned "* ]]; then
		host=$(RUSTUP_TOOLCHAIN=stable rustc -vV | sed -n 's/^host: //p')
		tp_log "linking the installed stable toolchain as $pinned-$host (rust-toolchain.toml)"
		ln -s "$(RUSTUP_TOOLCHAIN=stable rustc --print sysroot)" \
			"${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$pinned-$host"
	else
		tp_warn "rust-toolchain.toml pins $pinned, which rustup does not have; cargo will try to install it"
	fi
}
