# The ROS 2 wheels from PyPI export CMake targets with include paths of the machine that built
# them (/opt/python/cp311-cp311/...). persistence_ros_fix_wheel_include_dirs() points the
# imported targets of the calling directory at this interpreter's headers; call it after the
# find_package() calls and again after rosidl_generate_interfaces(). On a normal ROS 2 install
# no target matches and it changes nothing.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
function(persistence_ros_fix_wheel_include_dirs)
  get_directory_property(_targets IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs AND "${_dirs}" MATCHES "/opt/python/cp3")
      list(TRANSFORM _dirs REPLACE "^/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\\.[0-9]+$"
        "${Python3_INCLUDE_DIRS}")
      list(TRANSFORM _dirs REPLACE "^/opt/python/cp3[0-9]+-cp3[0-9]+/.*/numpy/.*include$"
        "${Python3_NumPy_INCLUDE_DIRS}")
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
    endif()
  endforeach()
endfunction()
