# Shared by the install scripts (sourced, not run).

# install_missing TAG PACKAGE...: apt-get installs the Debian packages that are not
# installed yet (`apt-get update` once, only when something is missing).
install_missing() {
	local tag=$1 pkg missing=()
	shift
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	echo "$tag: installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
