# The Debian package, made by CPack from a built tree (docs/install.md):
#
#   cpack --config build/release/CPackConfig.cmake -B build/release/package
#   sudo apt install ./build/release/package/kvc_*.deb
#
# One package, `kvc`, holding everything `cmake --install` installs, under /usr: libkvc
# (SONAME libkvc.so.<ABI major>), its headers, the CMake package and kvc.pc, the bundled
# policies (<libdir>/kvc/policies), kvc-eval and kvc-bench, and <datadir>/kvc (the embedded
# model, configs, the prepared evaluation text when the tree had it, prepare_kjv.sh, the SDK
# template, the C example and the Rust and Go bindings' sources). Its dependencies come from
# dpkg-shlibdeps (the Debian libraries libkvc and the hosts link).
set(CPACK_PACKAGE_NAME kvc)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "kvc")
set(CPACK_PACKAGE_CONTACT "kvc developers <kvc@invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "GPT-NeoX (Pythia) inference with pluggable KV-cache eviction policies")
set(CPACK_PACKAGE_DESCRIPTION
    "libkvc loads Hugging Face GPT-NeoX models, scores text and evicts KV-cache entries with\n"
    "policy plugins chosen by name (StreamingLLM, H2O, lazy H2O, SepLLM, a unified mix).\n"
    "Includes the C ABI headers, the CMake package and pkg-config file, the bundled policies,\n"
    "the kvc-eval and kvc-bench programs and a small embedded model.")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Install with DESTDIR and CMAKE_INSTALL_PREFIX=/usr, so that files written at install time
# (kvc.pc) name /usr and not the staging folder.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # kvc_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# A shlibs file (libkvc.so.1 belongs to this package) and the ldconfig trigger.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "bible-kjv, pkg-config, cmake, gnuplot-nox")
set(CPACK_DEBIAN_COMPRESSION_TYPE gzip)  # fast; the model dominates the size either way
set(CPACK_STRIP_FILES OFF)
include(CPack)
