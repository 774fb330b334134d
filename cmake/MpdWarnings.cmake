# Warnings for our own C++ sources (not for CUDA device code, whose host pass nvcc forwards).
function(mpd_set_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion>
      $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra -Wpedantic>)
  endif()
endfunction()
