# ctest driver for sal-guide-example: a fresh heap, two notes added in two
# runs (so the first must have persisted), then a listing in a third run.
# Usage: cmake -DPROGRAM=... -DHEAP=... -P run_guide_example.cmake
file(REMOVE "${HEAP}")

function(run expected)
  execute_process(COMMAND "${PROGRAM}" "${HEAP}" ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "sal-guide-example ${ARGN}:\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "exit status ${rc}")
  endif()
  if(NOT out STREQUAL expected)
    message(FATAL_ERROR "expected:\n${expected}")
  endif()
endfunction()

run("1. buy milk\n" "buy milk")
run("1. call the plumber\n2. buy milk\n" "call the plumber")
run("1. call the plumber\n2. buy milk\n")
file(REMOVE "${HEAP}")
