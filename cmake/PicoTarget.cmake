# pico_library(NAME folder SOURCES ... [TORCH]) — one library target per folder, public
# headers under <folder>/include/pico/<folder>/, internals under <folder>/src/.
# -Winvalid-pch: a precompiled header that GCC cannot use (flags that differ from its
# owner's) is a warning, an error in CI, instead of a silently slower build.
set(PICO_WARNINGS -Wall -Wextra -Wpedantic -Wno-unused-parameter -Winvalid-pch)
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

# <torch/torch.h> costs ~20 s per translation unit on 2 cores: targets that include LibTorch
# precompile it. Most share one precompiled header (pico_torch_pch's, built once instead of
# once per target: ~40 s of CPU each); it needs the same code-generation flags everywhere, so
# they are all built position-independent with the same warnings. pico_models (-fopenmp
# changes ATen's inline code) and pico_optim (-ffp-contract=off) precompile their own.
function(pico_torch_pch target)
  if(NOT PICO_PCH)
    return()
  endif()
  if(NOT TARGET pico_torch_pch)
    file(WRITE ${CMAKE_BINARY_DIR}/pico_torch_pch.cpp "// owner of the shared precompiled <torch/torch.h>\n")
    add_library(pico_torch_pch OBJECT ${CMAKE_BINARY_DIR}/pico_torch_pch.cpp)
    target_link_libraries(pico_torch_pch PRIVATE torch)
    get_target_property(_inc torch INTERFACE_INCLUDE_DIRECTORIES)
    if(_inc)
      target_include_directories(pico_torch_pch SYSTEM PRIVATE ${_inc})
    endif()
    set_target_properties(pico_torch_pch PROPERTIES POSITION_INDEPENDENT_CODE ON)
    pico_apply_flags(pico_torch_pch)
    target_precompile_headers(pico_torch_pch PRIVATE <torch/torch.h>)
  endif()
  # Executables too are compiled -fPIC (not CMake's -fPIE, which GCC would not mix with a
  # -fPIC header): position-independent code links into a PIE executable as it is.
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    target_compile_options(${target} PRIVATE -fPIC)
  else()
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  endif()
  target_precompile_headers(${target} REUSE_FROM pico_torch_pch)
endfunction()

# pico_without_torch(SOURCE...): sources of a LibTorch target that include no LibTorch header
# compile without the precompiled one: loading the ~600 MB .gch costs a translation unit ~11 s,
# more than such a file takes to compile (measured with g++ 12: apps/cmd_ledger.cpp 22.5 s with
# it, 10.7 s without; apps/cmd_train.cpp, which includes LibTorch, 21.4 s with, 30.0 s without).
# Call it in the CMakeLists.txt that adds the sources.
function(pico_without_torch)
  set_source_files_properties(${ARGN} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
endfunction()

# pico_use_torch(target [OWN_PCH]): links LibTorch and precompiles its header (shared, or the
# target's own with OWN_PCH, for targets whose flags differ from the shared one's).
function(pico_use_torch target)
  cmake_parse_arguments(ARG "OWN_PCH" "" "" ${ARGN})
  target_link_libraries(${target} PUBLIC torch)
  # LibTorch's headers are not -Wpedantic clean; include them as system headers.
  get_target_property(_inc torch INTERFACE_INCLUDE_DIRECTORIES)
  if(_inc)
    target_include_directories(${target} SYSTEM PUBLIC ${_inc})
  endif()
  if(PICO_PCH AND ARG_OWN_PCH)
    target_precompile_headers(${target} PRIVATE <torch/torch.h>)
  else()
    pico_torch_pch(${target})
  endif()
endfunction()

function(pico_library name)
  cmake_parse_arguments(ARG "TORCH;OWN_PCH" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(pico_${name} STATIC ${ARG_SOURCES})
  add_library(pico::${name} ALIAS pico_${name})
  target_include_directories(pico_${name}
    PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(pico_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  set_target_properties(pico_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  if(ARG_TORCH AND ARG_OWN_PCH)
    pico_use_torch(pico_${name} OWN_PCH)
  elseif(ARG_TORCH)
    pico_use_torch(pico_${name})
  endif()
  pico_apply_flags(pico_${name})
endfunction()
