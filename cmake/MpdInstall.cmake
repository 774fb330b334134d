# Install rules and the exported CMake package (find_package(mpdiffuser) in firmware builds).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS mpdiffuser EXPORT mpdiffuserTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY csrc/include/mpdiffuser DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp" PATTERN "*.def")
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/include/mpdiffuser/version.h"
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mpdiffuser)

set(_mpd_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/mpdiffuser)
install(EXPORT mpdiffuserTargets NAMESPACE mpdiffuser:: DESTINATION ${_mpd_cmake_dir})
configure_package_config_file(cmake/mpdiffuserConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/mpdiffuserConfig.cmake" INSTALL_DESTINATION ${_mpd_cmake_dir})
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/mpdiffuserConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/mpdiffuserConfig.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/mpdiffuserConfigVersion.cmake"
        DESTINATION ${_mpd_cmake_dir})
