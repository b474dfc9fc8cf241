# Package builds: scikit-build-core (pyproject.toml) runs CMakeLists.txt with SKBUILD set when a wheel is built
# (`pip install .`, `pip install gatekit-<version>.tar.gz`, `pip wheel .`). The op libraries go into the wheel's
# gatekit/_ops/, the sources into gatekit/_native/ (`gatekit ops build` builds from them after install), and
# package_record.py writes gatekit/_ops/build.json, the record gatekit.native_ops checks before it loads a library.
#
# The ONNX Runtime library needs no runtime to build (native/ort/ort_abi.h), so every package carries it. The
# OpenVINO extension is tied to the one OpenVINO release it is compiled against. pip builds in an isolated
# environment without openvino, but it runs the build with the Python it installs into; that Python, run with -I
# (outside pip's overlay), says whether openvino is installed where the package goes. GATEKIT_PACKAGE_OPENVINO:
#   AUTO (default)  build the extension when that Python (or the build's own) has openvino: `pip install openvino`
#                   then `pip install gatekit[ort,openvino]` installs both libraries; otherwise the package
#                   carries the sources and `gatekit ops build` builds it after install
#   ON              the same, and an error when there is no openvino
#   OFF             never (a wheel meant for machines with other OpenVINO releases)
# build.json records the release; a library built for another release than the installed one is refused (and
# `gatekit ops status` says so), so a wheel moved to another environment falls back to `gatekit ops build`.
set(GATEKIT_PACKAGE_OPENVINO AUTO CACHE STRING "Package builds: build the OpenVINO extension (AUTO, ON, OFF)")
set_property(CACHE GATEKIT_PACKAGE_OPENVINO PROPERTY STRINGS AUTO ON OFF)

set(GATEKIT_LIB_DESTINATION gatekit/_ops)
set(GATEKIT_SRC_DESTINATION gatekit/_native)

# gatekit_package_prepare(): before enable_language(CXX). Sets GATEKIT_PACKAGE_CXX (a C++ compiler was found),
# Python_EXECUTABLE, and GATEKIT_OPS_OV: where openvino is found (GATEKIT_PACKAGE_OPENVINO above), OpenVINO_DIR /
# TBB_DIR and GATEKIT_PACKAGE_OV_VERSION from it; else OFF, and GATEKIT_PACKAGE_OV_REASON says why.
# (CMAKE_PREFIX_PATH holds site-packages folders in a package build, where find_package could otherwise meet some
# openvino/cmake/ that nothing pins.)
macro(gatekit_package_prepare)
  if(NOT Python_EXECUTABLE)
    find_package(Python COMPONENTS Interpreter REQUIRED)
  endif()
  set(GATEKIT_PACKAGE_CXX ON)
  if(NOT GATEKIT_REQUIRE_CXX)
    include(CheckLanguage)
    check_language(CXX)
    if(NOT CMAKE_CXX_COMPILER)
      set(GATEKIT_PACKAGE_CXX OFF)
      message(WARNING "gatekit ops: no C++ compiler found: this package carries no op library, and dynamic graphs "
                      "run their standard-ops fallback until `gatekit ops build` builds it (install g++ or "
                      "clang++, or set CXX; -DGATEKIT_REQUIRE_CXX=ON makes this an error)")
    endif()
  endif()
  string(TOUPPER "${GATEKIT_PACKAGE_OPENVINO}" _gk_pkg_ov)  # CMake's boolean spellings: OFF, false, 0, on, 1, ...
  if(_gk_pkg_ov MATCHES "^(OFF|0|NO|FALSE|N)$")
    set(_gk_pkg_ov OFF)
  elseif(_gk_pkg_ov MATCHES "^(ON|1|YES|TRUE|Y)$")
    set(_gk_pkg_ov ON)
  elseif(NOT _gk_pkg_ov STREQUAL "AUTO")
    message(FATAL_ERROR "gatekit ops: GATEKIT_PACKAGE_OPENVINO must be AUTO, ON or OFF, "
                        "got ${GATEKIT_PACKAGE_OPENVINO}")
  endif()
  set(GATEKIT_PACKAGE_OV_VERSION "")
  set(GATEKIT_PACKAGE_OV_REASON "")
  if(NOT GATEKIT_OPS_OV)
    set(GATEKIT_PACKAGE_OV_REASON "not asked for (GATEKIT_OPS_OV=OFF)")
  elseif(_gk_pkg_ov STREQUAL "OFF")
    set(GATEKIT_OPS_OV OFF)
    set(GATEKIT_PACKAGE_OV_REASON "not in this package (GATEKIT_PACKAGE_OPENVINO=OFF: it is tied to one OpenVINO \
release): `gatekit ops build` builds it for the installed openvino")
  else()
    set(_gk_ov "")
    foreach(_gk_isolation -I "")  # the Python the package goes into, then the build's own
      execute_process(COMMAND "${Python_EXECUTABLE}" ${_gk_isolation} "${CMAKE_CURRENT_SOURCE_DIR}/package_record.py"
                              --find-openvino
                      OUTPUT_VARIABLE _gk_found RESULT_VARIABLE _gk_ov_rc ERROR_QUIET)
      if(_gk_ov_rc EQUAL 0 AND _gk_found)
        set(_gk_ov "${_gk_found}")
        break()
      endif()
    endforeach()
    if(NOT _gk_ov)
      if(_gk_pkg_ov STREQUAL "ON")
        message(FATAL_ERROR "gatekit ops: GATEKIT_PACKAGE_OPENVINO=ON, but ${Python_EXECUTABLE} has no openvino "
                            "wheel with a cmake/ folder; install openvino first")
      endif()
      set(GATEKIT_OPS_OV OFF)
      set(GATEKIT_PACKAGE_OV_REASON "openvino was not installed when the package was built (install it first to \
have the extension built at install): `gatekit ops build` builds it for the installed openvino")
    else()
      string(REPLACE "|" ";" _gk_ov "${_gk_ov}")
      list(GET _gk_ov 0 _gk_ov_dir)
      list(GET _gk_ov 1 GATEKIT_PACKAGE_OV_VERSION)
      set(OpenVINO_DIR "${_gk_ov_dir}" CACHE PATH "OpenVINO's cmake folder" FORCE)
      set(TBB_DIR "${_gk_ov_dir}" CACHE PATH "the TBB OpenVINO ships" FORCE)
      message(STATUS "gatekit ops: building the OpenVINO extension against openvino ${GATEKIT_PACKAGE_OV_VERSION} "
                     "(${_gk_ov_dir})")
    endif()
  endif()
endmacro()

# gatekit_package_check_flags(): after enable_language(CXX). A package's library must run on every CPU of its
# platform: the kernel paths get their own flags per file and are chosen at run time, so flags that raise the
# baseline of every file (-march=native, -mavx2, ...) would make the portable path crash on an older CPU.
function(gatekit_package_check_flags)
  if(NOT GATEKIT_PORTABLE)
    return()
  endif()
  string(TOUPPER "${CMAKE_BUILD_TYPE}" _bt)
  set(_flags " ${CMAKE_CXX_FLAGS} ${CMAKE_CXX_FLAGS_${_bt}} ")
  set(_cpu_specific " (-march=[^ ]+|-mcpu=[^ ]+|-mavx[^ ]*|-mfma|-mf16c|-mbmi2?|-msse4[^ ]*|-mssse3|-xHost) ")
  string(REGEX MATCH "${_cpu_specific}" _bad "${_flags}")
  if(_bad)
    string(STRIP "${_bad}" _bad)
    message(FATAL_ERROR "gatekit ops: the compiler flags (CXXFLAGS) carry ${_bad}, which ties the package's op "
                        "library to one CPU; unset it (each kernel path is compiled with its own flags and picked at "
                        "run time) or pass -DGATEKIT_PORTABLE=OFF")
  endif()
endfunction()

# gatekit_package_record(): at the end. Installs the sources and, after the libraries, writes build.json.
function(gatekit_package_record)
  install(DIRECTORY kernel ort openvino DESTINATION ${GATEKIT_SRC_DESTINATION})
  install(FILES CMakeLists.txt package.cmake package_record.py README.md DESTINATION ${GATEKIT_SRC_DESTINATION})
  set(_ort_reason "")
  set(_ov_reason "${GATEKIT_PACKAGE_OV_REASON}")
  if(NOT GATEKIT_PACKAGE_CXX)
    set(_ort_reason "no C++ compiler when the package was built; `gatekit ops build` builds it")
    if(GATEKIT_OPS_OV AND NOT _ov_reason)
      set(_ov_reason "${_ort_reason}")
    endif()
  elseif(NOT GATEKIT_OPS_ORT)
    set(_ort_reason "not asked for (GATEKIT_OPS_ORT=OFF)")
  endif()
  if(GATEKIT_PACKAGE_CXX AND GATEKIT_OPS_OV AND NOT _ov_reason AND NOT TARGET gatekit_ov_ops)
    set(_ov_reason "CMake did not find OpenVINO (Runtime + ONNX frontend) in ${OpenVINO_DIR}")
  endif()
  string(REPLACE ";" "," _isa "${GATEKIT_ISA_LIST}")
  set(_cxx "")
  if(GATEKIT_PACKAGE_CXX)
    set(_cxx "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}")
  endif()
  set(_probe "")
  if(CMAKE_CROSSCOMPILING)
    set(_probe "--no-probe")
  endif()
  install(CODE "
    execute_process(
      COMMAND \"${Python_EXECUTABLE}\" \"${CMAKE_CURRENT_SOURCE_DIR}/package_record.py\"
        --ops-dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${GATEKIT_LIB_DESTINATION}\"
        --source \"${CMAKE_CURRENT_SOURCE_DIR}\" --machine \"${CMAKE_SYSTEM_PROCESSOR}\" --isa \"${_isa}\"
        --compiler \"${_cxx}\" --cmake \"${CMAKE_VERSION}\" --openvino-version \"${GATEKIT_PACKAGE_OV_VERSION}\"
        --ort-reason \"${_ort_reason}\" --openvino-reason \"${_ov_reason}\" ${_probe}
      RESULT_VARIABLE _gk_rc)
    if(NOT _gk_rc EQUAL 0)
      message(FATAL_ERROR \"gatekit ops: writing ${GATEKIT_LIB_DESTINATION}/build.json failed (see above)\")
    endif()")
endfunction()
