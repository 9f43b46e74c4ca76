/* libkvc.so is kvc_core linked whole; CMake needs one source of its own for the target. */
typedef int kvc_shared_library_anchor;
