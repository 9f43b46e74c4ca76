# kvc_add_policy: builds a kvc eviction-policy plugin, libkvc_policy_<name>.so.
#
#   kvc_add_policy(<name> SOURCES <file>...
#                  [OUTPUT_DIRECTORY <dir>]      # where the .so is built
#                  [INSTALL_DESTINATION <dir>]   # default: ${KVC_INSTALL_POLICY_DIR}
#                  [COMPONENT <component>]
#                  [NO_INSTALL])
#
# The target is kvc_policy_<name>. It is a MODULE (loaded with dlopen, never linked), compiled
# against the kvc headers only (kvc::abi: kvc/policy.h and the C++ helpers kvc/policy.hpp), with
# hidden visibility and a version script so that kvc_policy_entry is its only exported symbol,
# and linked with --no-undefined so that an accidental dependency on libkvc fails at build time.
# Sources see KVC_POLICY_NAME="<name>".
#
# Works with find_package(kvc) (the installed package includes this file) and in the kvc source
# tree itself (the bundled policies), where the plugins land in ${KVC_BUILD_POLICY_DIR}.
include_guard(GLOBAL)

# Functions see the caller's CMAKE_CURRENT_LIST_DIR, so remember where the version script is.
set_property(GLOBAL PROPERTY KVC_POLICY_VERSION_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/kvc_policy.map")

function(kvc_add_policy name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "NO_INSTALL"
                        "OUTPUT_DIRECTORY;INSTALL_DESTINATION;COMPONENT" "SOURCES")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "kvc_add_policy(${name}): unknown arguments '${arg_UNPARSED_ARGUMENTS}' "
                        "(expected SOURCES, OUTPUT_DIRECTORY, INSTALL_DESTINATION, COMPONENT, "
                        "NO_INSTALL)")
  endif()
  if(NOT name MATCHES "^[a-z0-9_]+$")
    message(FATAL_ERROR "kvc_add_policy: the policy name '${name}' must match [a-z0-9_]+ "
                        "(it becomes libkvc_policy_<name>.so and the name users select)")
  endif()
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "kvc_add_policy(${name}): no SOURCES given")
  endif()
  if(NOT TARGET kvc::abi)
    message(FATAL_ERROR "kvc_add_policy(${name}): target kvc::abi is missing; "
                        "call find_package(kvc) before kvc_add_policy")
  endif()

  set(target kvc_policy_${name})
  add_library(${target} MODULE ${arg_SOURCES})
  target_link_libraries(${target} PRIVATE kvc::abi)
  get_property(languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if("CXX" IN_LIST languages)
    target_compile_features(${target} PRIVATE cxx_std_17)  # what kvc/policy.hpp needs
  endif()
  target_compile_definitions(${target} PRIVATE KVC_POLICY_NAME="${name}")
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME "kvc_policy_${name}"
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON)

  if(NOT WIN32 AND NOT APPLE)
    get_property(version_script GLOBAL PROPERTY KVC_POLICY_VERSION_SCRIPT)
    target_link_options(${target} PRIVATE
      "LINKER:--version-script=${version_script}" "LINKER:--no-undefined")
    set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${version_script}")
  endif()

  if(arg_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${arg_OUTPUT_DIRECTORY}")
  elseif(KVC_BUILD_POLICY_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${KVC_BUILD_POLICY_DIR}")
  endif()

  if(NOT arg_NO_INSTALL)
    if(arg_INSTALL_DESTINATION)
      set(destination "${arg_INSTALL_DESTINATION}")
    elseif(KVC_INSTALL_POLICY_DIR)
      set(destination "${KVC_INSTALL_POLICY_DIR}")
    else()
      set(destination "lib/kvc/policies")
    endif()
    if(arg_COMPONENT)
      install(TARGETS ${target} LIBRARY DESTINATION "${destination}" COMPONENT ${arg_COMPONENT})
    else()
      install(TARGETS ${target} LIBRARY DESTINATION "${destination}")
    endif()
  endif()
endfunction()
