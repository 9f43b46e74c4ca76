# The third-party round trip, run by CTest as `cmake -P`:
#  1. cmake --install the current build tree into a fresh prefix;
#  2. configure and build the *installed* SDK template against that prefix, out of tree;
#  3. check that the plugin exports kvc_policy_entry and nothing else;
#  4. build tests/sdk/run_plugin.c against the installed package (kvc::kvc) and run it: it
#     loads the plugin by path, by name via the session's policy_path, via KVC_POLICY_PATH,
#     and (once the template is installed into kvc's prefix) next to libkvc.so;
#  5. the installed kvc-eval lists it (when the hosts are built).
# Inputs (-D): BUILD_DIR, SOURCE_DIR, WORK_DIR, GENERATOR, C_COMPILER, CXX_COMPILER, MODEL.
cmake_minimum_required(VERSION 3.16)
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR GENERATOR C_COMPILER CXX_COMPILER MODEL)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "out_of_tree.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(template_build ${WORK_DIR}/template-build)
set(consumer_build ${WORK_DIR}/consumer-build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(step what)
  message(STATUS "sdk test: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "sdk test: ${what} failed (exit ${rc}):\n${out}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

# 1. Install.
step("cmake --install ${BUILD_DIR} --prefix ${prefix}"
  ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(file
    lib/libkvc.so include/kvc/kvc.h include/kvc/policy.h include/kvc/policy.hpp
    lib/cmake/kvc/kvcConfig.cmake lib/cmake/kvc/kvcConfigVersion.cmake
    lib/cmake/kvc/kvcTargets.cmake lib/cmake/kvc/kvcPolicy.cmake
    share/kvc/sdk/README.md share/kvc/sdk/template/CMakeLists.txt
    share/kvc/sdk/template/keynorm.cpp)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "sdk test: the install lacks ${prefix}/${file}")
  endif()
endforeach()

# Whatever the build tree made, the install must hold: the hosts and every bundled policy.
foreach(host kvc-eval kvc-bench)
  if(EXISTS ${BUILD_DIR}/bin/${host} AND NOT EXISTS ${prefix}/bin/${host})
    message(FATAL_ERROR "sdk test: ${host} was built but `cmake --install` did not install "
                        "${prefix}/bin/${host} (an install(TARGETS ${host} RUNTIME ...) rule "
                        "is missing)")
  endif()
endforeach()
file(GLOB bundled RELATIVE ${BUILD_DIR}/lib/kvc/policies
     ${BUILD_DIR}/lib/kvc/policies/libkvc_policy_*.so)
foreach(plugin_file ${bundled})
  if(NOT EXISTS ${prefix}/lib/kvc/policies/${plugin_file})
    message(FATAL_ERROR "sdk test: ${plugin_file} was built but not installed into "
                        "${prefix}/lib/kvc/policies (build it with kvc_add_policy, whose install "
                        "rule does that)")
  endif()
endforeach()
message(STATUS "sdk test: installed ${bundled}")

# 2. The template, from where it was installed, as a separate project.
set(common_args -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
step("configure the installed template"
  ${CMAKE_COMMAND} -S ${prefix}/share/kvc/sdk/template -B ${template_build} ${common_args}
  -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/template-prefix)
step("build the template" ${CMAKE_COMMAND} --build ${template_build})
set(plugin ${template_build}/libkvc_policy_keynorm.so)
if(NOT EXISTS ${plugin})
  message(FATAL_ERROR "sdk test: the template did not produce ${plugin}")
endif()
step("install the template" ${CMAKE_COMMAND} --install ${template_build})
if(NOT EXISTS ${WORK_DIR}/template-prefix/lib/kvc/policies/libkvc_policy_keynorm.so)
  message(FATAL_ERROR "sdk test: kvc_add_policy's install rule did not install the plugin "
                      "into <prefix>/lib/kvc/policies")
endif()

# 3. Exactly one exported symbol.
find_program(NM nm)
if(NM)
  step("list exported symbols" ${NM} -D --defined-only ${plugin})
  string(REGEX MATCHALL "[ \t][A-Za-z][ \t]+[^ \t\n]+" symbols "${step_output}")
  set(names "")
  foreach(line ${symbols})
    string(REGEX REPLACE "^[ \t][A-Za-z][ \t]+" "" name "${line}")
    list(APPEND names ${name})
  endforeach()
  if(NOT names STREQUAL "kvc_policy_entry")
    message(FATAL_ERROR "sdk test: the plugin should export only kvc_policy_entry, it exports: "
                        "${names}")
  endif()
endif()

# 4. A C host program against the installed package, then run it.
step("configure the C consumer"
  ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/sdk/consumer -B ${consumer_build} ${common_args})
step("build the C consumer" ${CMAKE_COMMAND} --build ${consumer_build})
# The template's own install rule, now into kvc's prefix: found by name next to libkvc.so.
step("install the template into the kvc prefix"
  ${CMAKE_COMMAND} --install ${template_build} --prefix ${prefix})
step("run_plugin"
  ${CMAKE_COMMAND} -E env KVC_POLICY_PATH=${template_build}
  ${consumer_build}/run_plugin ${MODEL} ${plugin} ${template_build}
  ${prefix}/lib/kvc/policies/libkvc_policy_keynorm.so)
message("${step_output}")

# 5. The installed kvc-eval (found libkvc through its RUNPATH) lists the new policy.
if(EXISTS ${prefix}/bin/kvc-eval)
  step("installed kvc-eval --list_policies" ${prefix}/bin/kvc-eval --list_policies)
  foreach(name keynorm ${bundled})
    string(REGEX REPLACE "^libkvc_policy_(.*)\\.so$" "\\1" name "${name}")
    if(NOT step_output MATCHES "${name}")
      message(FATAL_ERROR "sdk test: the installed kvc-eval does not list '${name}':\n"
                          "${step_output}")
    endif()
  endforeach()
  message(STATUS "sdk test: the installed kvc-eval lists keynorm and the bundled policies")
endif()
