# worker/module.mk - sources of the worker module (all .c files here; see the GNUmakefile
# for the optional-part naming rules).
LIB_SRCS += $(wildcard worker/*.c)
LIB_CU_SRCS += $(wildcard worker/*.cu)
