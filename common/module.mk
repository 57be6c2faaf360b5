# common/module.mk - sources of the common module (all .c files here; see the GNUmakefile
# for the optional-part naming rules).
LIB_SRCS += $(wildcard common/*.c)
LIB_CU_SRCS += $(wildcard common/*.cu)
