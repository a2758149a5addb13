"""Published constructor configs of the real architectures (copied from the project's reference data), for
building them on torch's meta device (registry tests) or for real (activation profiles). Pure data."""

SD15_UNET = {"act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
SD21_UNET = {"act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 1024, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 96, "use_linear_projection": True, "upcast_attention": True, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
SDXL_UNET = {"act_fn": "silu", "addition_embed_type": "text_time", "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "center_input_sample": False, "cross_attention_dim": 2048, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "sample_size": 128, "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True, "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}
CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768}
OPEN_CLIP_H = {"vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512}
OPEN_CLIP_BIG_G = {"vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 1280}
SD_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215}
PIXART_ALPHA_1024 = {
    "num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4, "out_channels": 8, "num_layers": 28,
    "cross_attention_dim": 1152, "attention_bias": True, "sample_size": 128, "patch_size": 2,
    "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 4096,
}
STABLE_CASCADE_C = {
    "in_channels": 16, "out_channels": 16, "timestep_ratio_embedding_dim": 64, "patch_size": 1, "conditioning_dim": 2048,
    "block_out_channels": [2048, 2048], "num_attention_heads": [32, 32], "down_num_layers_per_block": [8, 24],
    "up_num_layers_per_block": [24, 8], "down_blocks_repeat_mappers": [1, 1], "up_blocks_repeat_mappers": [1, 1],
    "block_types_per_layer": [["SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"]] * 2,
    "clip_text_in_channels": 1280, "clip_text_pooled_in_channels": 1280, "clip_image_in_channels": 768, "clip_seq": 4,
    "effnet_in_channels": None, "pixel_mapper_in_channels": None, "kernel_size": 3, "dropout": [0.1, 0.1],
    "self_attn": True, "timestep_conditioning_type": ["sca", "crp"], "switch_level": [False],
}
STABLE_CASCADE_C_LITE = {
    **STABLE_CASCADE_C, "conditioning_dim": 1536, "block_out_channels": [1536, 1536], "num_attention_heads": [24, 24],
    "down_num_layers_per_block": [4, 12], "up_num_layers_per_block": [12, 4],
}
T5_V1_1_XXL = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False,
}

REFERENCE_COUNTS = {
    "sd15.unet": 859_520_964, "sd15.text_encoder": 123_060_480, "sd15.vae": 83_653_863,
    "sd2.unet": 865_910_724, "sd2.text_encoder": 340_387_840,
    "sdxl.unet": 2_567_463_684, "sdxl.text_encoder_2": 694_659_840,
    "pixart_alpha.transformer": 611_349_152, "pixart_alpha.text_encoder": 4_762_310_656,
    "stable_cascade.prior": 3_589_103_632, "stable_cascade-lite.prior": 1_030_785_040,
}
"""Published / reference parameter counts."""
LORA_PER_RANK_KOHYA_FULL = {"sd15.unet": 423_936, "sd2.unet": 432_128, "sdxl.unet": 2_659_840,
                            "sd15.text_encoder": 165_888, "sd2.text_encoder": 423_936, "sdxl.text_encoder_2": 737_280}
LORA_PER_RANK_ATTENTION = {"sd15.unet": 199_296, "sdxl.unet": 1_451_520}
FLUX1_DEV = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX1_SCHNELL = {**FLUX1_DEV, "guidance_embeds": False}
CHROMA1 = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "axes_dims_rope": [16, 56, 56],
    "approximator_num_channels": 64, "approximator_hidden_dim": 5120, "approximator_layers": 5,
}
FLUX_VAE = {**SD_VAE, "latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False,
            "use_post_quant_conv": False, "sample_size": 1024}
FLUX_FLOW_SCHEDULER = {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
                       "base_image_seq_len": 256, "max_image_seq_len": 4096, "num_train_timesteps": 1000}
"""FLUX.1-dev's (and Chroma's) FlowMatchEulerDiscreteScheduler: the resolution-dependent shift."""
FLUX_SCHNELL_SCHEDULER = {"shift": 1.0, "use_dynamic_shifting": False, "num_train_timesteps": 1000}

REFERENCE_COUNTS.update({
    "flux1_dev.transformer": 11_901_408_320, "chroma.transformer": 8_899_983_424,
    "flux1_dev.text_encoder": 123_060_480, "flux1_dev.text_encoder_2": 4_762_310_656,
})
"""FLUX.1's T5-XXL file holds 4,893,906,944 values: its token embedding twice (shared and encoder.embed_tokens, tied in memory)."""

Z_IMAGE_TURBO = {
    "all_f_patch_size": [1], "all_patch_size": [2], "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
    "cap_feat_dim": 2560, "dim": 3840, "in_channels": 16, "n_heads": 30, "n_kv_heads": 30, "n_layers": 30,
    "n_refiner_layers": 2, "norm_eps": 1e-05, "qk_norm": True, "rope_theta": 256.0, "t_scale": 1000.0,
}
"""Tongyi-MAI/Z-Image-Turbo's transformer/config.json (ZImageTransformer2DModel); Z-Image (base) has the same layout."""
QWEN3_4B = {
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 2560, "intermediate_size": 9728, "max_position_embeddings": 40960,
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000, "tie_word_embeddings": True, "vocab_size": 151936,
}
"""Z-Image's text_encoder/config.json (Qwen3-4B, loaded as transformers.Qwen3Model: no LM head)."""
Z_IMAGE_TURBO_SCHEDULER = {"num_train_timesteps": 1000, "use_dynamic_shifting": False, "shift": 3.0}
"""Z-Image-Turbo's FlowMatchEulerDiscreteScheduler: a fixed shift of 3 (Z-Image base ships shift 6, per third-party
code; its scheduler_config.json was not found verbatim here)."""

REFERENCE_COUNTS.update({"z_image.transformer": 6_154_908_736, "z_image.text_encoder": 4_022_468_096})
"""Meta-device counts of the configs above; the model card says "6B" for the transformer and Qwen3-4B's says 4.0B."""

QWEN_IMAGE = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 3584, "guidance_embeds": False, "axes_dims_rope": [16, 56, 56],
}
"""Qwen/Qwen-Image transformer/config.json (QwenImageTransformer2DModel, 20B MMDiT; the same for Qwen-Image-Edit)."""
QWEN_IMAGE_VAE = {
    "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
    "temperal_downsample": [False, True, True], "dropout": 0.0,
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
                     -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
                    1.6382, 1.1253, 2.8251, 1.916],
}
"""Qwen/Qwen-Image vae/config.json (AutoencoderKLQwenImage: Wan 2.1's causal 3-D VAE, x8 spatial)."""
QWEN2_5_VL_7B = {
    "model_type": "qwen2_5_vl", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_act": "silu",
    "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
    "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
    "bos_token_id": 151643, "eos_token_id": 151645, "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
        "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "in_channels": 3,
        "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu", "tokens_per_second": 2,
    },
}
"""Qwen2.5-VL-7B-Instruct's config.json (Qwen-Image's text_encoder: Qwen2_5_VLForConditionalGeneration with its vision
tower and LM head). Quoted from a published copy of the Qwen-Image text_encoder config (transformers 4.53.1)."""
QWEN_IMAGE_SCHEDULER = {
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 0.9,
    "base_image_seq_len": 256, "max_image_seq_len": 8192, "shift_terminal": 0.02, "time_shift_type": "exponential",
}
"""Qwen/Qwen-Image scheduler/scheduler_config.json (FlowMatchEulerDiscreteScheduler): resolution-dependent shift."""

REFERENCE_COUNTS.update({
    "qwen_image.transformer": 20_430_401_088, "qwen_image.text_encoder": 8_292_166_656,
})
"""Qwen-Image: 20,430,401,088 transformer parameters (its 40.86 GB bf16 file); Qwen2.5-VL-7B's 8.29B with the vision tower."""
