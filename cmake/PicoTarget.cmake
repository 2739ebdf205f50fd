# pico_library(NAME folder SOURCES ... [TORCH]) — one library target per folder, public
# headers under <folder>/include/pico/<folder>/, internals under <folder>/src/.
set(PICO_WARNINGS -Wall -Wextra -Wpedantic -Wno-unused-parameter)
if(PICO_WERROR)
  list(APPEND PICO_WARNINGS -Werror)
endif()

function(pico_apply_flags target)
  target_compile_options(${target} PRIVATE ${PICO_WARNINGS})
  if(PICO_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

# Targets that include LibTorch share one precompiled header: <torch/torch.h> costs
# ~20 s per translation unit on 2 cores without it.
function(pico_use_torch target)
  target_link_libraries(${target} PUBLIC torch)
  # LibTorch's headers are not -Wpedantic clean; include them as system headers.
  get_target_property(_inc torch INTERFACE_INCLUDE_DIRECTORIES)
  if(_inc)
    target_include_directories(${target} SYSTEM PUBLIC ${_inc})
  endif()
  if(PICO_PCH)
    target_precompile_headers(${target} PRIVATE <torch/torch.h>)
  endif()
endfunction()

function(pico_library name)
  cmake_parse_arguments(ARG "TORCH" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(pico_${name} STATIC ${ARG_SOURCES})
  add_library(pico::${name} ALIAS pico_${name})
  target_include_directories(pico_${name}
    PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(pico_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  set_target_properties(pico_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  if(ARG_TORCH)
    pico_use_torch(pico_${name})
  endif()
  pico_apply_flags(pico_${name})
endfunction()
