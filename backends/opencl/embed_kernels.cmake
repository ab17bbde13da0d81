# Turn an OpenCL C file (INPUT) into a C file (OUTPUT) defining NAME, its text as a byte array
# (no quoting to escape).
file(READ ${INPUT} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
get_filename_component(src ${INPUT} NAME)
file(WRITE ${OUTPUT} "/* generated from ${src} */\nconst char ${NAME}[] = {${bytes}0};\n")
