# Install rules and packaging for the sal library.
#
# `cmake --install <build> [--prefix DIR]` installs:
#   lib/libsal.so.0.1.0, libsal.so.0.1, libsal.so  the shared library
#                                                (soname libsal.so.0.1)
#   lib/libsal.a                                 the static library
#   include/sal.h                                the public header (the manual)
#   lib/cmake/sal/                               find_package(sal): targets
#                                                sal::sal, sal::sal_static
#   lib/pkgconfig/sal.pc                         pkg-config --cflags --libs sal
#
# ("lib" is CMAKE_INSTALL_LIBDIR from GNUInstallDirs.)  The CMake package
# finds its prefix relative to where it is installed; sal.pc names the
# prefix given at install time (`--prefix`), or CMAKE_INSTALL_PREFIX.

include(CMakePackageConfigHelpers)

set(SAL_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/sal"
    CACHE STRING "Where the sal CMake package files are installed")
set(SAL_PKGCONFIG_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig"
    CACHE STRING "Where sal.pc is installed")

install(TARGETS sal sal_static
  EXPORT salTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime
          NAMELINK_COMPONENT development
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)

install(FILES ${PROJECT_SOURCE_DIR}/sal/include/sal.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development)

install(EXPORT salTargets
  NAMESPACE sal::
  FILE salTargets.cmake
  DESTINATION ${SAL_CMAKE_INSTALL_DIR} COMPONENT development)

configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/salConfig.cmake.in
  ${PROJECT_BINARY_DIR}/salConfig.cmake
  INSTALL_DESTINATION ${SAL_CMAKE_INSTALL_DIR})
# 0.x releases may change the API between minor versions.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/salConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/salConfig.cmake
  ${PROJECT_BINARY_DIR}/salConfigVersion.cmake
  DESTINATION ${SAL_CMAKE_INSTALL_DIR} COMPONENT development)

# pkg-config: sal.pc is written at install time, so that it names the
# prefix actually installed to (`cmake --install --prefix DIR` included).
# Relative install directories become ${prefix}/..., absolute ones stay.
foreach(_sal_dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_sal_dir}}")
    set(SAL_PC_${_sal_dir} "${CMAKE_INSTALL_${_sal_dir}}")
  else()
    set(SAL_PC_${_sal_dir} "\${prefix}/${CMAKE_INSTALL_${_sal_dir}}")
  endif()
endforeach()
configure_file(${CMAKE_CURRENT_LIST_DIR}/SalPkgConfig.cmake.in
               ${PROJECT_BINARY_DIR}/SalPkgConfig.cmake @ONLY)
install(SCRIPT ${PROJECT_BINARY_DIR}/SalPkgConfig.cmake
  COMPONENT development)
install(FILES ${PROJECT_BINARY_DIR}/sal.pc
  DESTINATION ${SAL_PKGCONFIG_INSTALL_DIR} COMPONENT development)
