"""What a model is: the families imgbot knows (`known`), those it drives through diffusers'
AutoPipeline (`auto_pipeline`), those that only edit (`edit_only`), and what a model folder
says about itself without being loaded (`model_folder`).

The bottom of generation beside the job: everything else reads it, and it imports only
`generation.job`. Pure data and folder reading, except where a module says it imports
diffusers (inside the functions that need it), so that `imgbot check` stays quick.
"""
