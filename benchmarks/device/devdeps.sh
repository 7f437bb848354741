# shellcheck shell=bash
# Sourced by run.sh. devdeps_cmake_args DEB_DIR SYSROOT: where this machine lacks the C runtime's
# build headers (nlohmann-json, OpenSSL) and DEB_DIR holds their Debian packages (fetch-deps.sh),
# unpack them into SYSROOT and set DEVDEPS_CMAKE_ARGS (CMake -D settings) and DEVDEPS_CXXFLAGS so
# that CMake finds them there. OpenSSL's headers are paired with this machine's own libcrypto.so.3
# (the 3.x ABI is stable), so the library libtgir loads at run time is the system's.
# Returns 1 (and says why) when nothing is missing, or something missing cannot be supplied.
# DEVDEPS_SYSTEM_INCLUDE (default /usr/include): where to look for the headers (a rehearsal on a
# machine that has them points it elsewhere to take the unpacking path).
devdeps_cmake_args() {
  local debs=$1 sysroot=$2 inc=${DEVDEPS_SYSTEM_INCLUDE:-/usr/include} need=() crypto deb
  DEVDEPS_CMAKE_ARGS=()
  DEVDEPS_CXXFLAGS=""
  [ -f "$inc/nlohmann/json.hpp" ] || need+=(nlohmann-json3-dev)
  [ -f "$inc/openssl/evp.h" ] || need+=(libssl-dev)
  if [ ${#need[@]} -eq 0 ]; then
    echo "devdeps: this machine has the C runtime's headers"
    return 1
  fi
  for deb in "${need[@]}"; do
    if ! compgen -G "$debs/${deb}_*.deb" >/dev/null; then
      echo "devdeps: missing ${need[*]} and no $debs/${deb}_*.deb (run benchmarks/device/fetch-deps.sh and carry .devdeps)"
      return 1
    fi
  done
  mkdir -p "$sysroot"
  for deb in "${need[@]}"; do
    dpkg-deb -x "$(compgen -G "$debs/${deb}_*.deb" | head -1)" "$sysroot"
  done
  if [[ " ${need[*]} " == *" nlohmann-json3-dev "* ]]; then
    DEVDEPS_CMAKE_ARGS+=("-Dnlohmann_json_DIR=$sysroot/usr/share/cmake/nlohmann_json")
  fi
  if [[ " ${need[*]} " == *" libssl-dev "* ]]; then
    crypto=$(ldconfig -p 2>/dev/null | awk '/libcrypto\.so\.3 .*x86-64/ {print $NF; exit}')
    if [ -z "$crypto" ]; then
      echo "devdeps: OpenSSL headers unpacked, but this machine has no libcrypto.so.3 to link"
      return 1
    fi
    DEVDEPS_CMAKE_ARGS+=("-DOPENSSL_INCLUDE_DIR=$sysroot/usr/include" "-DOPENSSL_CRYPTO_LIBRARY=$crypto")
    DEVDEPS_CXXFLAGS="-isystem $sysroot/usr/include/x86_64-linux-gnu"  # opensslconf.h, configuration.h
  fi
  echo "devdeps: unpacked ${need[*]} into $sysroot; CMake: ${DEVDEPS_CMAKE_ARGS[*]}"
}
