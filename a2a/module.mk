# a2a/module.mk - sources of the a2a module (all .c files here; see the GNUmakefile
# for the optional-part naming rules).
LIB_SRCS += $(wildcard a2a/*.c)
LIB_CU_SRCS += $(wildcard a2a/*.cu)
