# ctest driver for the command lines a user meets first (test cli_help):
# the example programs, sal-recover-time and scripts/{test,showcase}.sh.
# --help prints the usage on stdout and exits 0; a bad option or argument
# names what is wrong on stderr and exits nonzero; a heap file that cannot
# be created is named in the message.  The scripts must answer --help
# before they install or build anything: they run here with cmake, ctest,
# the compilers, make, apt-get and sudo replaced by stubs that fail.
#
# cmake -DSOURCE_DIR=... -DWORK_DIR=... [-DSHOWCASE=...] [-DGUIDE=...]
#       [-DRECOVER_TIME=...] [-DSALBENCH=...] -P cli_help.cmake

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# expect(<exit code> <stdout regex> <stderr regex> COMMAND...)
# An empty regex matches anything.
function(expect want_rc out_re err_re)
  execute_process(COMMAND ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                  TIMEOUT 30)
  string(REPLACE ";" " " what "${ARGN}")
  if(NOT "${rc}" STREQUAL "${want_rc}")
    message(FATAL_ERROR "${what}: exit ${rc}, expected ${want_rc}\n"
                        "stdout:\n${out}\nstderr:\n${err}")
  endif()
  if(NOT out_re STREQUAL "" AND NOT out MATCHES "${out_re}")
    message(FATAL_ERROR "${what}: stdout does not match '${out_re}':\n${out}\n"
                        "stderr:\n${err}")
  endif()
  if(NOT err_re STREQUAL "" AND NOT err MATCHES "${err_re}")
    message(FATAL_ERROR "${what}: stderr does not match '${err_re}':\n${err}")
  endif()
  message(STATUS "${what}: exit ${rc} as expected")
endfunction()

if(SHOWCASE)
  expect(0 "^usage: sal-showcase" "" "${SHOWCASE}" --help)
  expect(2 "" "unknown option '--bogus'" "${SHOWCASE}" --bogus)
  expect(2 "" "one HEAP-FILE at most" "${SHOWCASE}" a b)
  # WORK_DIR exists: the file cannot be created, and the message says which.
  expect(1 "" "cannot create the heap file ${WORK_DIR}: File exists"
         "${SHOWCASE}" "${WORK_DIR}")
  expect(1 "" "cannot make a temporary directory in ${WORK_DIR}/missing: No such file"
         ${CMAKE_COMMAND} -E env "TMPDIR=${WORK_DIR}/missing" "${SHOWCASE}")
endif()

if(GUIDE)
  expect(0 "^usage: sal-guide-example" "" "${GUIDE}" --help)
  expect(0 "^usage: sal-guide-example" "" "${GUIDE}" -h)
  expect(2 "" "unknown option '--bogus'" "${GUIDE}" --bogus)
  expect(2 "" "^usage: sal-guide-example" "${GUIDE}")
endif()

if(RECOVER_TIME)
  expect(0 "^usage: sal-recover-time" "" "${RECOVER_TIME}" --help)
  expect(0 "^usage: sal-recover-time" "" "${RECOVER_TIME}" -h)
  expect(16 "" "unknown option '--bogus'" "${RECOVER_TIME}" --bogus)
  expect(16 "" "--make wants a count above 0, not 'abc'"
         "${RECOVER_TIME}" --make abc "${WORK_DIR}/made.heap")
  if(EXISTS "${WORK_DIR}/made.heap")
    message(FATAL_ERROR "sal-recover-time --make abc created a heap")
  endif()
endif()

if(SALBENCH)
  expect(0 "salbench" "" "${SALBENCH}" --help)
  expect(2 "" "-o wants a list of counts" "${SALBENCH}" sync -o ",")
  expect(2 "" "--segment-mib wants a power of two" "${SALBENCH}" alloc --segment-mib 3)
endif()

# The scripts, with every tool they could install or build with replaced.
set(stubs "${WORK_DIR}/stubs")
file(MAKE_DIRECTORY "${stubs}")
foreach(tool cmake ctest apt-get sudo cc gcc clang make ninja)
  file(WRITE "${stubs}/${tool}"
       "#!/bin/sh\necho \"stub ${tool} called: $*\" >&2\nexit 97\n")
  file(CHMOD "${stubs}/${tool}" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
endforeach()
set(path "${stubs}:$ENV{PATH}")
expect(0 "scripts/test.sh \\[PRESET\\]" "^$"
       ${CMAKE_COMMAND} -E env "PATH=${path}" "${SOURCE_DIR}/scripts/test.sh" --help)
expect(0 "scripts/showcase.sh \\[HEAP-FILE\\]" "^$"
       ${CMAKE_COMMAND} -E env "PATH=${path}" "${SOURCE_DIR}/scripts/showcase.sh" --help)
expect(0 "scripts/showcase.sh \\[HEAP-FILE\\]" "^$"
       ${CMAKE_COMMAND} -E env "PATH=${path}" "${SOURCE_DIR}/scripts/showcase.sh" -h)

file(REMOVE_RECURSE "${WORK_DIR}")
