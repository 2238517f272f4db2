/* Everything in this module is declared inline in include/CLinuxShims.h; SwiftPM builds a C target only when it has
   a source file, so this is that file. */
#include "CLinuxShims.h"
