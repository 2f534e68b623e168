# The optional MPI addon (binding/mpi -> <output>/mpi/negative_cache_mpi.node),
# built beside the main addon only when find_package(MPI) succeeds. It is a
# separate library so the main addon (and the prebuilt binary) never depends
# on libmpi; its own subfolder keeps node-gyp-build and prebuildify, which take
# the first *.node of build/Release, on the main addon.
# <output>/mpi/build-info.json records what happened, for the run-time message
# that explains why distributed training is unavailable.
option(NEGCACHE_MPI "Build the MPI addon (distributed training) when CMake finds MPI" ON)

if(NEGCACHE_ADDON AND DEFINED CMAKE_JS_VERSION)
  set(NEGCACHE_MPI_OUT "${CMAKE_LIBRARY_OUTPUT_DIRECTORY}/mpi")
  set(NEGCACHE_MPI_WHY "")
  if(NOT NEGCACHE_MPI)
    set(NEGCACHE_MPI_WHY "the build was configured with -DNEGCACHE_MPI=OFF")
  else()
    set(MPI_CXX_SKIP_MPICXX ON)  # the C API only; no MPI-2 C++ bindings
    find_package(MPI COMPONENTS CXX QUIET)
    if(NOT MPI_CXX_FOUND)
      set(NEGCACHE_MPI_WHY "CMake's find_package(MPI) found no MPI library when the package was built")
    endif()
  endif()

  if(NEGCACHE_MPI_WHY STREQUAL "")
    execute_process(COMMAND node -p "require('node-addon-api').include_dir"
      WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}
      OUTPUT_VARIABLE NEGCACHE_MPI_NAPI_DIR OUTPUT_STRIP_TRAILING_WHITESPACE)
    file(GLOB NEGCACHE_MPI_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/binding/mpi/*.cc)
    add_library(negative_cache_mpi SHARED ${NEGCACHE_MPI_SOURCES} ${CMAKE_JS_SRC})
    set_target_properties(negative_cache_mpi PROPERTIES PREFIX "" SUFFIX ".node"
      LIBRARY_OUTPUT_DIRECTORY "${NEGCACHE_MPI_OUT}")
    target_include_directories(negative_cache_mpi PRIVATE ${CMAKE_JS_INC} ${CMAKE_CURRENT_SOURCE_DIR}/${NEGCACHE_MPI_NAPI_DIR})
    target_compile_definitions(negative_cache_mpi PRIVATE NAPI_VERSION=8 NAPI_CPP_EXCEPTIONS NODE_ADDON_API_DISABLE_DEPRECATED NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS)
    target_link_libraries(negative_cache_mpi PRIVATE MPI::MPI_CXX ${CMAKE_JS_LIB})
    if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
      target_compile_options(negative_cache_mpi PRIVATE -O2 -Wall -Wextra -fvisibility=hidden)
      # --as-needed drops libmpi_cxx, which the wrapper's link line names but we never use.
      target_link_options(negative_cache_mpi PRIVATE -Wl,--as-needed)
    endif()
    set(NEGCACHE_MPI_INFO "{\"built\": true, \"mpiVersion\": \"${MPI_CXX_VERSION}\", \"library\": \"${MPI_mpi_LIBRARY}\"}")
  else()
    file(REMOVE "${NEGCACHE_MPI_OUT}/negative_cache_mpi.node")
    set(NEGCACHE_MPI_INFO "{\"built\": false, \"reason\": \"${NEGCACHE_MPI_WHY}\"}")
  endif()
  file(WRITE "${NEGCACHE_MPI_OUT}/build-info.json" "${NEGCACHE_MPI_INFO}\n")
  if(NEGCACHE_MPI_WHY STREQUAL "")
    message(STATUS "negative-cache: MPI addon ON (MPI ${MPI_CXX_VERSION})")
  else()
    message(STATUS "negative-cache: MPI addon OFF: ${NEGCACHE_MPI_WHY}")
  endif()
endif()
