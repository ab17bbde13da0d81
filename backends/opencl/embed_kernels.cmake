# Turn kernels.cl into a C file holding its text as a byte array (no quoting to escape).
file(READ ${INPUT} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUTPUT} "/* generated from kernels.cl */\nconst char mb_opencl_kernels[] = {${bytes}0};\n")
