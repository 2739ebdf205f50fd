# Every third-party library pico uses, found once. Each folder links only what it uses.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# LibTorch: Debian's libtorch-dev (1.13, CPU) or a 2.x with CUDA (pip torch's cmake prefix).
find_package(Torch REQUIRED)
message(STATUS "pico: LibTorch ${Torch_VERSION} from ${Torch_DIR}")

find_package(yaml-cpp REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(OpenSSL REQUIRED)          # SHA-256 (libcrypto)
find_package(OpenMP REQUIRED)

pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_path(CPPZMQ_INCLUDE_DIR zmq.hpp REQUIRED)

set(HDF5_PREFER_PARALLEL OFF)
find_package(HDF5 REQUIRED COMPONENTS C)
add_library(pico_hdf5 INTERFACE)
target_include_directories(pico_hdf5 SYSTEM INTERFACE ${HDF5_INCLUDE_DIRS})
target_link_libraries(pico_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(pico_hdf5 INTERFACE ${HDF5_DEFINITIONS})

# sentencepiece's trainer lives in a second library that pkg-config lists but does not
# always expose as a target.
find_library(SENTENCEPIECE_TRAIN_LIB sentencepiece_train REQUIRED)
